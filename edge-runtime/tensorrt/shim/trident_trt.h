/*
 * C interface of trident's TensorRT shim: the engine builder (trident_trt.cpp) and the engine runtime
 * (trident_trt_engine.cpp), compiled together into one shared library, libtrident_trt.so, that
 * trident opens at run time (src/shim.rs) and never links: one trident-edge binary serves units with
 * and without TensorRT, and a TensorRT minor the release was not built for gets its own shim built on
 * the unit from this source (src/shim_build.rs).
 * Plain C types only, so Rust can declare it without bindgen. No function lets a C++ exception out.
 * Only the functions below are exported (the library is compiled with -fvisibility=hidden).
 */
#ifndef TRIDENT_TRT_H
#define TRIDENT_TRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TRIDENT_TRT_API __attribute__((visibility("default")))
#else
#define TRIDENT_TRT_API
#endif

/* The version of this interface. trident refuses a library with another one: a struct or a signature
 * changed. Bump it with any such change. */
#define TRIDENT_TRT_ABI_VERSION 1

/* TRIDENT_TRT_ABI_VERSION of the source this library was compiled from. */
TRIDENT_TRT_API int32_t trident_trt_abi_version(void);

/* Status codes of trident_trt_build (and, with the ones below, of the engine runtime). */
#define TRIDENT_TRT_OK 0
#define TRIDENT_TRT_FAILED 1
#define TRIDENT_TRT_OUT_OF_MEMORY 2
#define TRIDENT_TRT_PARSE_FAILED 3

/* NV_TENSORRT_MAJOR/MINOR/PATCH of the headers this shim was compiled with. */
TRIDENT_TRT_API void trident_trt_compiled_version(int32_t* major, int32_t* minor, int32_t* patch);

/* getInferLibVersion() of the libnvinfer loaded at run time (8.x: M*1000+m*100+p; >= 10: M*10000+m*100+p). */
TRIDENT_TRT_API int32_t trident_trt_runtime_version(void);

/*
 * Parses onnx_path and writes a serialized engine to engine_path.
 * fp16: non-zero to allow fp16 kernels. workspace_bytes: builder workspace limit.
 * timing_cache_path: NULL, or a file to load (if present) and save the timing cache to.
 * log/log_len: receives warnings and errors (the tail when longer), always NUL-terminated.
 * Returns one of the TRIDENT_TRT_* status codes.
 */
TRIDENT_TRT_API int trident_trt_build(const char* onnx_path, const char* engine_path, int fp16, uint64_t workspace_bytes,
    const char* timing_cache_path, char* log, size_t log_len);

/* ---- Engine runtime (trident_trt_engine.cpp) ---- */

/* More status codes, of trident_trt_engine_load and trident_trt_engine_run. */
#define TRIDENT_TRT_BAD_ENGINE 4 /* the file is not an engine this TensorRT and GPU can deserialize */
#define TRIDENT_TRT_BAD_IO 5     /* input/output missing, not float32, dynamic, or a buffer of the wrong length */
#define TRIDENT_TRT_CUDA 6       /* a CUDA runtime call failed (no device, driver mismatch, ...) */

#define TRIDENT_TRT_MAX_DIMS 8
#define TRIDENT_TRT_NAME_BYTES 256

/* A deserialized engine with its execution context, CUDA stream and device buffers. Opaque. */
typedef struct trident_trt_engine trident_trt_engine;

/* The name and static shape of one IO tensor. */
typedef struct trident_trt_tensor_info
{
    char name[TRIDENT_TRT_NAME_BYTES]; /* NUL-terminated (truncated if longer) */
    int32_t nb_dims;
    int64_t dims[TRIDENT_TRT_MAX_DIMS];
} trident_trt_tensor_info;

/*
 * Deserializes the engine at engine_path and prepares it to run: one execution context, one CUDA
 * stream, one device buffer per IO tensor (allocated once, reused by every run).
 * input_name/output_name: the tensors to feed and read; NULL picks the engine's only input / its
 * first output. Both must be float32 with static shapes (trident's engines keep float32 IO even
 * when built fp16).
 * On TRIDENT_TRT_OK, *out is a handle for trident_trt_engine_free and input/output describe the two
 * tensors; otherwise *out is NULL and log holds the reason. log/log_len as in trident_trt_build.
 */
TRIDENT_TRT_API int trident_trt_engine_load(const char* engine_path, const char* input_name, const char* output_name,
    trident_trt_engine** out, trident_trt_tensor_info* input, trident_trt_tensor_info* output, char* log,
    size_t log_len);

/*
 * One inference: copies input_len floats to the device, enqueues the engine on its stream, copies
 * output_len floats back and waits for the stream. The lengths must equal the element counts of the
 * shapes trident_trt_engine_load reported. Not safe to call concurrently on one handle.
 */
TRIDENT_TRT_API int trident_trt_engine_run(trident_trt_engine* engine, const float* input, size_t input_len, float* output,
    size_t output_len, char* log, size_t log_len);

/* Frees the context, engine, runtime, stream and device buffers. NULL is ignored. */
TRIDENT_TRT_API void trident_trt_engine_free(trident_trt_engine* engine);

#ifdef __cplusplus
}
#endif

#endif /* TRIDENT_TRT_H */
