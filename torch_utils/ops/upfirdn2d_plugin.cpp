// Python binding of the upfirdn2d kernels (see plugin_module.h).
#include "plugin_module.h"
#include "upfirdn2d.h"

static PyObject* py_upfirdn2d(PyObject*, PyObject* args) {
    unsigned long long x, y, f, stream;
    long long planes, channels, sn, sc, sy, sx;
    int in_w, in_h, out_w, out_h, upx, upy, downx, downy, padx0, pady0, kw, kh, separable, dtype, num_threads,
        emulate;
    if (!PyArg_ParseTuple(args, "KKKLLLLLLiiiiiiiiiiiiiiKii", &x, &y, &f, &planes, &channels, &sn, &sc, &sy, &sx,
                          &in_w, &in_h, &out_w, &out_h, &upx, &upy, &downx, &downy, &padx0, &pady0, &kw, &kh,
                          &separable, &dtype, &stream, &num_threads, &emulate))
        return nullptr;
    eg::Upfirdn2dParams p{};
    p.x = eg_ptr(x);
    p.y = eg_ptr(y);
    p.f = eg_ptr(f);
    p.planes = planes;
    p.channels = channels;
    p.x_sn = sn;
    p.x_sc = sc;
    p.x_sy = sy;
    p.x_sx = sx;
    p.in_w = in_w;
    p.in_h = in_h;
    p.out_w = out_w;
    p.out_h = out_h;
    p.separable = separable;
    p.dtype = dtype;
    const char* err = eg::upfirdn2d_axis(p.ax, upx, downx, padx0, kw);
    if (err == nullptr) err = eg::upfirdn2d_axis(p.ay, upy, downy, pady0, kh);
    if (err != nullptr) {
        PyErr_Format(PyExc_ValueError, "upfirdn2d: %s", err);
        return nullptr;
    }
    const eg::HostExec exec{num_threads, emulate != 0};
    return eg_run("upfirdn2d", [&] { return eg::upfirdn2d_launch(p, eg_ptr(stream), exec); });
}

static PyMethodDef methods[] = {
    {"upfirdn2d", py_upfirdn2d, METH_VARARGS,
     "upfirdn2d(x, y, f, planes, channels, x_sn, x_sc, x_sy, x_sx, in_w, in_h, out_w, out_h, upx, upy, downx, downy, padx0, pady0, kw, kh, "
     "separable, dtype, stream, num_threads, emulate_cuda_blocks): pointers as integers."},
    {nullptr, nullptr, 0, nullptr}};

EG_DEFINE_MODULE("Fused upfirdn2d kernels.", methods)
