// Python binding of the filtered_lrelu kernels (see plugin_module.h).
#include "filtered_lrelu.h"
#include "plugin_module.h"

// An axis as a tuple (in, out, up, pad, taps1, mid, down, offset, taps3).
static bool parse_axis(PyObject* t, eg::FlreluAxis& a) {
    a = eg::FlreluAxis{};
    return PyArg_ParseTuple(t, "iiiiiiiii", &a.in, &a.out, &a.up, &a.pad, &a.taps1, &a.mid, &a.down, &a.offset,
                            &a.taps3) != 0;
}

static PyObject* py_filtered_lrelu(PyObject*, PyObject* args) {
    unsigned long long x, y, b, f1, f3, mask, stream;
    long long planes, channels, mask_pitch;
    int sep1, sep3, mode, mask_bits, dtype, num_threads, emulate;
    double gain, slope, clamp;
    PyObject *axis_x, *axis_y;
    if (!PyArg_ParseTuple(args, "KKKKKKLLLiiiidddiO!O!Kii", &x, &y, &b, &f1, &f3, &mask, &planes, &channels,
                          &mask_pitch, &sep1, &sep3, &mode, &mask_bits, &gain, &slope, &clamp, &dtype, &PyTuple_Type,
                          &axis_x, &PyTuple_Type, &axis_y, &stream, &num_threads, &emulate))
        return nullptr;
    eg::FlreluParams p{};
    if (!parse_axis(axis_x, p.ax) || !parse_axis(axis_y, p.ay)) return nullptr;
    p.x = eg_ptr(x);
    p.y = eg_ptr(y);
    p.b = eg_ptr(b);
    p.f1 = eg_ptr(f1);
    p.f3 = eg_ptr(f3);
    p.mask = eg_ptr(mask);
    p.planes = planes;
    p.channels = channels > 0 ? channels : 1;
    p.mask_pitch = mask_pitch;
    p.sep1 = sep1;
    p.sep3 = sep3;
    p.mode = mode;
    p.mask_bits = mask_bits;
    p.gain = gain;
    p.slope = slope;
    p.clamp = clamp;
    p.dtype = dtype;
    const char* err = eg::flrelu_axis(p.ax);
    if (err == nullptr) err = eg::flrelu_axis(p.ay);
    if (err != nullptr) {
        PyErr_Format(PyExc_ValueError, "filtered_lrelu: %s", err);
        return nullptr;
    }
    const eg::HostExec exec{num_threads, emulate != 0};
    return eg_run("filtered_lrelu", [&] { return eg::flrelu_launch(p, eg_ptr(stream), exec); });
}

static PyMethodDef methods[] = {
    {"filtered_lrelu", py_filtered_lrelu, METH_VARARGS,
     "filtered_lrelu(x, y, b, f1, f3, mask, planes, channels, mask_pitch, sep1, sep3, mode, mask_bits, gain, "
     "slope, clamp, dtype, axis_x, axis_y, stream, num_threads, emulate_cuda_blocks): pointers as integers (0 "
     "for none), axes as tuples (in, out, up, pad, taps1, mid, down, offset, taps3)."},
    {nullptr, nullptr, 0, nullptr}};

EG_DEFINE_MODULE("Fused filtered_lrelu kernels.", methods)
