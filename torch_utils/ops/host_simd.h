// 32-byte vectors for host kernels (GCC / clang vector extensions): Vec<T>::type holds Vec<T>::lanes
// elements of T; loads and stores through memcpy (any alignment), whole or for the first n lanes
// (the rest read as zero). Host builds only.
#pragma once

#include <cstdint>
#include <cstring>

namespace eg {

template <class T>
struct Vec {
    typedef T type __attribute__((vector_size(32)));
    static constexpr int lanes = 32 / sizeof(T);
};

template <class V>
inline V vload(const void* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}

template <class V>
inline void vstore(void* p, V v) {
    std::memcpy(p, &v, sizeof(V));
}

// The first n lanes (all when n >= the vector's length); the others zero.
template <class V, class T>
inline V vload_n(const T* p, int64_t n) {
    if (n * int64_t(sizeof(T)) >= int64_t(sizeof(V))) return vload<V>(p);
    V v{};
    std::memcpy(&v, p, size_t(n > 0 ? n : 0) * sizeof(T));
    return v;
}

// Stores the first n lanes (all when n >= the vector's length).
template <class V, class T>
inline void vstore_n(T* p, V v, int64_t n) {
    if (n * int64_t(sizeof(T)) >= int64_t(sizeof(V))) return vstore(p, v);
    std::memcpy(p, &v, size_t(n > 0 ? n : 0) * sizeof(T));
}

}  // namespace eg
