// The Python side of a fused-op plugin: a plain CPython extension module. The Python wrappers check
// and prepare every tensor (device, dtype, contiguity, shape) and pass data pointers and sizes as
// integers, so the plugin needs neither pybind11 nor torch headers and builds in seconds.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "portable.h"

#define EG_CAT2(a, b) a##b
#define EG_CAT(a, b) EG_CAT2(a, b)

// Defines PyInit_<TORCH_EXTENSION_NAME> for a module with the given method table.
#define EG_DEFINE_MODULE(doc, methods)                                                  \
    static PyModuleDef eg_module_def = {PyModuleDef_HEAD_INIT, EG_STR(TORCH_EXTENSION_NAME), \
                                        doc, -1, methods, nullptr, nullptr, nullptr, nullptr};  \
    PyMODINIT_FUNC EG_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {                       \
        PyObject* m = PyModule_Create(&eg_module_def);                                  \
        if (m != nullptr) PyModule_AddIntConstant(m, "cuda", EG_PLUGIN_CUDA);           \
        return m;                                                                       \
    }
#define EG_STR2(x) #x
#define EG_STR(x) EG_STR2(x)

// 1 when the launcher was compiled by nvcc (the binding itself is compiled by the host compiler).
#ifndef EG_PLUGIN_CUDA
#define EG_PLUGIN_CUDA 0
#endif

// Runs `launch` without the GIL; converts an error message into RuntimeError.
template <class F>
inline PyObject* eg_run(const char* op, F launch) {
    const char* err = nullptr;
    Py_BEGIN_ALLOW_THREADS
    err = launch();
    Py_END_ALLOW_THREADS
    if (err != nullptr) {
        PyErr_Format(PyExc_RuntimeError, "%s: %s", op, err);
        return nullptr;
    }
    Py_RETURN_NONE;
}

inline void* eg_ptr(unsigned long long v) { return reinterpret_cast<void*>(static_cast<uintptr_t>(v)); }
