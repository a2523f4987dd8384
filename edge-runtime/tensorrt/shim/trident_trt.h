/*
 * C interface of trident's TensorRT engine-build shim (see trident_trt.cpp and src/native.rs).
 * Plain C types only, so Rust can declare it without bindgen. No function lets a C++ exception out.
 */
#ifndef TRIDENT_TRT_H
#define TRIDENT_TRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes of trident_trt_build. */
#define TRIDENT_TRT_OK 0
#define TRIDENT_TRT_FAILED 1
#define TRIDENT_TRT_OUT_OF_MEMORY 2
#define TRIDENT_TRT_PARSE_FAILED 3

/* NV_TENSORRT_MAJOR/MINOR/PATCH of the headers this shim was compiled with. */
void trident_trt_compiled_version(int32_t* major, int32_t* minor, int32_t* patch);

/* getInferLibVersion() of the libnvinfer loaded at run time (8.x: M*1000+m*100+p; >= 10: M*10000+m*100+p). */
int32_t trident_trt_runtime_version(void);

/*
 * Parses onnx_path and writes a serialized engine to engine_path.
 * fp16: non-zero to allow fp16 kernels. workspace_bytes: builder workspace limit.
 * timing_cache_path: NULL, or a file to load (if present) and save the timing cache to.
 * log/log_len: receives warnings and errors (the tail when longer), always NUL-terminated.
 * Returns one of the TRIDENT_TRT_* status codes.
 */
int trident_trt_build(const char* onnx_path, const char* engine_path, int fp16, uint64_t workspace_bytes,
    const char* timing_cache_path, char* log, size_t log_len);

#ifdef __cplusplus
}
#endif

#endif /* TRIDENT_TRT_H */
