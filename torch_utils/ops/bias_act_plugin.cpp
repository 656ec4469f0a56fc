// Python binding of the bias_act kernels (see plugin_module.h).
#include "bias_act.h"
#include "plugin_module.h"

static PyObject* py_bias_act(PyObject*, PyObject* args) {
    unsigned long long x, b, y, dy, dd, out, stream;
    long long rows, inner, channels;
    double alpha, gain, clamp;
    int act, mode, dtype, num_threads, emulate;
    if (!PyArg_ParseTuple(args, "KKKKKKLLLdddiiiKii", &x, &b, &y, &dy, &dd, &out, &rows, &inner, &channels,
                          &alpha, &gain, &clamp, &act, &mode, &dtype, &stream, &num_threads, &emulate))
        return nullptr;
    eg::BiasActParams p{};
    p.x = eg_ptr(x);
    p.b = eg_ptr(b);
    p.y = eg_ptr(y);
    p.dy = eg_ptr(dy);
    p.dd = eg_ptr(dd);
    p.out = eg_ptr(out);
    p.rows = rows;
    p.inner = inner;
    p.channels = channels;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    p.act = act;
    p.mode = mode;
    p.dtype = dtype;
    const eg::HostExec exec{num_threads, emulate != 0};
    return eg_run("bias_act", [&] { return eg::bias_act_launch(p, eg_ptr(stream), exec); });
}

static PyMethodDef methods[] = {
    {"bias_act", py_bias_act, METH_VARARGS,
     "bias_act(x, b, y, dy, dd, out, rows, inner, channels, alpha, gain, clamp, act, mode, dtype, stream, "
     "num_threads, emulate_cuda_blocks): pointers as integers (0 for none)."},
    {nullptr, nullptr, 0, nullptr}};

EG_DEFINE_MODULE("Fused bias_act kernels.", methods)
