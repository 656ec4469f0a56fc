// Python binding of the renderer's host kernels (see plugin_module.h).
#include "render_ops.h"
#include "plugin_module.h"

static PyObject* py_softplus(PyObject*, PyObject* args) {
    unsigned long long x, dy, out;
    long long n;
    int mode, dtype, num_threads;
    if (!PyArg_ParseTuple(args, "KKKLiii", &x, &dy, &out, &n, &mode, &dtype, &num_threads)) return nullptr;
    const eg::SoftplusParams p{eg_ptr(x), eg_ptr(dy), eg_ptr(out), n, mode, dtype};
    const eg::HostExec exec{num_threads, false};
    return eg_run("softplus", [&] { return eg::softplus_launch(p, exec); });
}

static PyObject* py_decoder_tail(PyObject*, PyObject* args) {
    unsigned long long src, sigma, rgb;
    long long rows, c, src_stride, sigma_stride, rgb_stride;
    double scale, shift;
    int dtype, num_threads;
    if (!PyArg_ParseTuple(args, "KKKLLLLLddii", &src, &sigma, &rgb, &rows, &c, &src_stride, &sigma_stride,
                          &rgb_stride, &scale, &shift, &dtype, &num_threads))
        return nullptr;
    const eg::DecoderTailParams p{eg_ptr(src), eg_ptr(sigma), eg_ptr(rgb), rows, c, src_stride, sigma_stride,
                                  rgb_stride, scale, shift, dtype};
    const eg::HostExec exec{num_threads, false};
    return eg_run("decoder_tail", [&] { return eg::decoder_tail_launch(p, exec); });
}

static PyObject* py_plane_gather(PyObject*, PyObject* args) {
    unsigned long long table, coords, out, rows_out, weights_out;
    PyObject* axes;
    double scale;
    long long n, m, c, h, w, planes, sn, sp, sh, sw;
    int rows_int64, dtype, num_threads;
    if (!PyArg_ParseTuple(args, "KKKKKiOdLLLLLLLLLLii", &table, &coords, &out, &rows_out, &weights_out, &rows_int64,
                          &axes, &scale, &n, &m, &c, &h, &w, &planes, &sn, &sp, &sh, &sw, &dtype, &num_threads))
        return nullptr;
    eg::PlaneGatherParams p{};
    if (planes < 1 || planes > eg::kMaxPlanes || !PySequence_Check(axes) || PySequence_Size(axes) != planes * 6) {
        PyErr_SetString(PyExc_ValueError, "plane_gather: axes must hold planes * 6 numbers (planes <= 4)");
        return nullptr;
    }
    for (long long i = 0; i < planes * 6; ++i) {
        PyObject* item = PySequence_GetItem(axes, i);
        const double v = item ? PyFloat_AsDouble(item) : -1.0;
        Py_XDECREF(item);
        if (PyErr_Occurred()) return nullptr;
        p.axes[i / 6][i % 6 / 2][i % 2] = v;
    }
    p.table = eg_ptr(table);
    p.coords = eg_ptr(coords);
    p.out = eg_ptr(out);
    p.rows_out = eg_ptr(rows_out);
    p.weights_out = eg_ptr(weights_out);
    p.rows_int64 = rows_int64;
    p.scale = scale;
    p.n = n, p.m = m, p.c = c, p.h = h, p.w = w, p.planes = planes;
    p.sn = sn, p.sp = sp, p.sh = sh, p.sw = sw;
    p.dtype = dtype;
    const eg::HostExec exec{num_threads, false};
    return eg_run("plane_gather", [&] { return eg::plane_gather_launch(p, exec); });
}

static PyObject* py_plane_scatter(PyObject*, PyObject* args) {
    unsigned long long rows, weights, grad, out;
    long long points, k, c, table_rows, rows_per_block;
    int rows_int64, dtype, num_threads;
    if (!PyArg_ParseTuple(args, "KKKKiLLLLLii", &rows, &weights, &grad, &out, &rows_int64, &points, &k, &c,
                          &table_rows, &rows_per_block, &dtype, &num_threads))
        return nullptr;
    const eg::PlaneScatterParams p{eg_ptr(rows), eg_ptr(weights), eg_ptr(grad), eg_ptr(out), rows_int64,
                                   points, k, c, table_rows, rows_per_block, dtype};
    const eg::HostExec exec{num_threads, false};
    return eg_run("plane_scatter", [&] { return eg::plane_scatter_launch(p, exec); });
}

static PyObject* py_composite(PyObject*, PyObject* args) {
    PyObject *colors, *densities, *depths, *samples;
    unsigned long long rgb, depth, weight_sum;
    long long rays, c;
    int white_back, dtype, num_threads;
    if (!PyArg_ParseTuple(args, "OOOOLLKKKiii", &colors, &densities, &depths, &samples, &rays, &c, &rgb, &depth,
                          &weight_sum, &white_back, &dtype, &num_threads))
        return nullptr;
    eg::CompositeParams p{};
    const Py_ssize_t sets = PySequence_Check(samples) ? PySequence_Size(samples) : -1;
    if (sets < 1 || sets > eg::kMaxSets) {
        PyErr_SetString(PyExc_ValueError, "composite: 1 to 4 sample sets");
        return nullptr;
    }
    PyObject* lists[4] = {colors, densities, depths, samples};
    for (int l = 0; l < 4; ++l) {
        if (!PySequence_Check(lists[l]) || PySequence_Size(lists[l]) != sets) {
            PyErr_SetString(PyExc_ValueError, "composite: one pointer and sample count per set");
            return nullptr;
        }
        for (Py_ssize_t k = 0; k < sets; ++k) {
            PyObject* item = PySequence_GetItem(lists[l], k);
            const unsigned long long v = item ? PyLong_AsUnsignedLongLong(item) : 0;
            Py_XDECREF(item);
            if (PyErr_Occurred()) return nullptr;
            if (l == 0) p.colors[k] = eg_ptr(v);
            if (l == 1) p.densities[k] = eg_ptr(v);
            if (l == 2) p.depths[k] = eg_ptr(v);
            if (l == 3) p.samples[k] = int64_t(v);
        }
    }
    p.sets = int(sets);
    p.rays = rays, p.c = c;
    p.rgb = eg_ptr(rgb), p.depth = eg_ptr(depth), p.weight_sum = eg_ptr(weight_sum);
    p.white_back = white_back, p.dtype = dtype;
    const eg::HostExec exec{num_threads, false};
    return eg_run("composite", [&] { return eg::composite_launch(p, exec); });
}

static PyObject* py_importance(PyObject*, PyObject* args) {
    unsigned long long z, w, u, out;
    long long rays, s, k;
    int dtype, num_threads;
    if (!PyArg_ParseTuple(args, "KKKKLLLii", &z, &w, &u, &out, &rays, &s, &k, &dtype, &num_threads)) return nullptr;
    const eg::ImportanceParams p{eg_ptr(z), eg_ptr(w), eg_ptr(u), eg_ptr(out), rays, s, k, dtype};
    const eg::HostExec exec{num_threads, false};
    return eg_run("importance", [&] { return eg::importance_launch(p, exec); });
}

static PyObject* py_winograd(PyObject*, PyObject* args) {
    unsigned long long a, b, c2;
    long long batch, c, h, w, ty, tx, ty0, tyn, sb, sc, sh, sw;
    int output, adjoint, parity, dtype, num_threads;
    if (!PyArg_ParseTuple(args, "iiiKKKLLLLLLLLLLLLii", &output, &adjoint, &parity, &a, &b, &c2, &batch, &c, &h, &w,
                          &ty, &tx, &ty0, &tyn, &sb, &sc, &sh, &sw, &dtype, &num_threads))
        return nullptr;
    const eg::HostExec exec{num_threads, false};
    if (output) {
        const eg::WinogradOutputParams p{eg_ptr(a), eg_ptr(b), adjoint, batch, c, h, w, ty, tx, ty0, tyn, sb, sc,
                                         sh, sw, dtype};
        return eg_run("winograd_output", [&] { return eg::winograd_output_launch(p, exec); });
    }
    const eg::WinogradInputParams p{eg_ptr(a), eg_ptr(b), eg_ptr(c2), adjoint, parity, batch, c, h, w, ty, tx,
                                    ty0, tyn, sb, sc, sh, sw, dtype};
    return eg_run("winograd_input", [&] { return eg::winograd_input_launch(p, exec); });
}

static PyObject* py_fir4_nhwc(PyObject*, PyObject* args) {
    unsigned long long x, y;
    long long batch, c, in_h, in_w, out_h, out_w, x_sb, x_sh, x_sw, pad_x, pad_y;
    double fx0, fx1, fx2, fx3, fy0, fy1, fy2, fy3;
    int dtype, num_threads;
    if (!PyArg_ParseTuple(args, "KKLLLLLLLLLLLddddddddii", &x, &y, &batch, &c, &in_h, &in_w, &out_h, &out_w, &x_sb,
                          &x_sh, &x_sw, &pad_x, &pad_y, &fx0, &fx1, &fx2, &fx3, &fy0, &fy1, &fy2, &fy3, &dtype,
                          &num_threads))
        return nullptr;
    const eg::Fir4Params p{eg_ptr(x), eg_ptr(y), batch, c, in_h, in_w, out_h, out_w, x_sb, x_sh, x_sw, pad_x, pad_y,
                           {fx0, fx1, fx2, fx3}, {fy0, fy1, fy2, fy3}, dtype};
    const eg::HostExec exec{num_threads, false};
    return eg_run("fir4_nhwc", [&] { return eg::fir4_nhwc_launch(p, exec); });
}

static PyMethodDef methods[] = {
    {"fir4_nhwc", py_fir4_nhwc, METH_VARARGS,
     "fir4_nhwc(x, y, batch, c, in_h, in_w, out_h, out_w, x_sb, x_sh, x_sw, pad_x, pad_y, fx0..fx3, fy0..fy3, dtype, "
     "num_threads)."},
    {"winograd", py_winograd, METH_VARARGS,
     "winograd(output, adjoint, parity, p0, p1, p2, batch, c, h, w, ty, tx, ty0, tyn, sb, sc, sh, sw, dtype, "
     "num_threads): "
     "output 0, the input transform: p0 x, p1 V, p2 dx (adjoint); output 1, the output transform: p0 M, p1 y."},
    {"softplus", py_softplus, METH_VARARGS,
     "softplus(x, dy, out, n, mode, dtype, num_threads): pointers as integers (0 for none)."},
    {"decoder_tail", py_decoder_tail, METH_VARARGS,
     "decoder_tail(src, sigma, rgb, rows, c, src_stride, sigma_stride, rgb_stride, scale, shift, dtype, "
     "num_threads)."},
    {"plane_gather", py_plane_gather, METH_VARARGS,
     "plane_gather(table, coords, out, rows_out, weights_out, rows_int64, axes (planes * 6 floats), scale, n, m, c, "
     "h, w, planes, sn, sp, sh, sw, dtype, num_threads)."},
    {"plane_scatter", py_plane_scatter, METH_VARARGS,
     "plane_scatter(rows, weights, grad, out, rows_int64, points, k, c, table_rows, rows_per_block, dtype, "
     "num_threads): the gather's transpose into out [table_rows, c] (zero-filled here)."},
    {"composite", py_composite, METH_VARARGS,
     "composite(colors, densities, depths, samples (lists, one entry per set), rays, c, rgb, depth, weight_sum, "
     "white_back, dtype, num_threads)."},
    {"importance", py_importance, METH_VARARGS,
     "importance(z, w, u, out, rays, s, k, dtype, num_threads): pointers as integers."},
    {nullptr, nullptr, 0, nullptr}};

EG_DEFINE_MODULE("Renderer host kernels.", methods)
