/*
 * A stand-in for libtrident_trt.so: the C ABI of edge-runtime/tensorrt/shim/trident_trt.h (included,
 * so the compiler holds it to the real declarations), driven by trident's real dlopen path.
 *
 * It is as strict as TensorRT where trident can get it wrong:
 *   - it links the (stand-in) libnvinfer.so.<major>, so it does not load where that is missing;
 *   - it reports the headers' version (STANDIN_MAJOR/MINOR/PATCH) and the loaded library's
 *     (getInferLibVersion), so a shim for 8.2 meets an 8.0 library as the real one would;
 *   - "build" refuses a file that does not start like an ONNX protobuf, and writes a plan tagged with
 *     the TensorRT version that built it; "load" refuses a plan of another version or a corrupt
 *     one (TensorRT's "Magic tag does not match" / "Version tag does not match");
 *   - names, shapes and buffer lengths are checked like the real runtime checks them.
 * A run is computed by ONNX Runtime in a child process (reference.py, the REFERENCE setting) and, for an
 * fp16 plan, rounded to half precision, so validation against tract sees realistic differences.
 *
 * Settings come from TRIDENT_STANDIN_<KEY> or from standin.env beside the library (KEY=VALUE lines).
 * FAIL injects a failure: build (TensorRT builder error), oom (out of GPU memory
 * while building), cuda (no usable GPU at load), run (a CUDA error mid-run), skew (wrong numbers).
 * What it cannot show: real kernels, real timing, real memory pressure, a real GPU.
 */
#define _GNU_SOURCE
#include "trident_trt.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int getInferLibVersion(void);

#define MAGIC "TRIDENT-STANDIN-PLAN\n"

struct trident_trt_engine
{
    pid_t child;
    int to_child;
    int from_child;
    int fp16;
    size_t in_len;
    size_t out_len;
};

static void say(char* log, size_t log_len, const char* fmt, ...)
{
    if (log == NULL || log_len == 0)
    {
        return;
    }
    size_t used = strlen(log);
    if (used + 1 >= log_len)
    {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log + used, log_len - used, fmt, ap);
    va_end(ap);
}

/*
 * A setting: the environment's TRIDENT_STANDIN_<KEY>, else the line KEY=VALUE of standin.env beside
 * this library (found with dladdr), so tests running in one process each configure their own copy.
 */
static const char* setting(const char* key, char* buf, size_t len)
{
    char var[64];
    snprintf(var, sizeof var, "TRIDENT_STANDIN_%s", key);
    const char* env = getenv(var);
    if (env != NULL)
    {
        return env;
    }
    Dl_info info;
    if (dladdr((void*) &setting, &info) == 0 || info.dli_fname == NULL)
    {
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s", info.dli_fname);
    char* slash = strrchr(path, '/');
    if (slash == NULL)
    {
        return NULL;
    }
    snprintf(slash + 1, sizeof path - (size_t) (slash + 1 - path), "standin.env");
    FILE* f = fopen(path, "r");
    if (f == NULL)
    {
        return NULL;
    }
    const char* found = NULL;
    size_t klen = strlen(key);
    while (fgets(buf, (int) len, f) != NULL)
    {
        if (strncmp(buf, key, klen) == 0 && buf[klen] == '=')
        {
            buf[strcspn(buf, "\n")] = '\0';
            found = buf + klen + 1;
            break;
        }
    }
    fclose(f);
    return found;
}

static int failing(const char* what)
{
    char buf[1024];
    const char* f = setting("FAIL", buf, sizeof buf);
    return f != NULL && strstr(f, what) != NULL;
}

int32_t trident_trt_abi_version(void)
{
    char buf[64];
    const char* forced = setting("ABI", buf, sizeof buf);
    return forced ? atoi(forced) : TRIDENT_TRT_ABI_VERSION;
}

void trident_trt_compiled_version(int32_t* major, int32_t* minor, int32_t* patch)
{
    *major = STANDIN_MAJOR;
    *minor = STANDIN_MINOR;
    *patch = STANDIN_PATCH;
}

int32_t trident_trt_runtime_version(void)
{
    return getInferLibVersion();
}

int trident_trt_build(const char* onnx_path, const char* engine_path, int fp16, uint64_t workspace_bytes,
    const char* timing_cache_path, char* log, size_t log_len)
{
    (void) workspace_bytes;
    if (log && log_len)
    {
        log[0] = '\0';
    }
    FILE* in = fopen(onnx_path, "rb");
    if (in == NULL)
    {
        say(log, log_len, "[E] cannot open %s: %s\n", onnx_path, strerror(errno));
        return TRIDENT_TRT_PARSE_FAILED;
    }
    int first = fgetc(in);
    fclose(in);
    /* An ONNX ModelProto starts with field 1 (ir_version, varint): byte 0x08. */
    if (first != 0x08)
    {
        say(log, log_len, "[E] [TRT] ModelImporter.cpp:720: Failed to parse ONNX model from file: %s\n", onnx_path);
        return TRIDENT_TRT_PARSE_FAILED;
    }
    if (failing("oom"))
    {
        say(log, log_len,
            "[E] 2: [virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory "
            "(Requested amount of GPU memory (1073741824 bytes) could not be allocated.)\n");
        return TRIDENT_TRT_OUT_OF_MEMORY;
    }
    if (failing("build"))
    {
        say(log, log_len, "[E] 10: [optimizer.cpp::computeCosts::2011] Error Code 10: Internal Error "
                          "(Could not find any implementation for node /model.0/conv/Conv.)\n");
        return TRIDENT_TRT_FAILED;
    }
    FILE* out = fopen(engine_path, "wb");
    if (out == NULL)
    {
        say(log, log_len, "[E] cannot write %s: %s\n", engine_path, strerror(errno));
        return TRIDENT_TRT_FAILED;
    }
    fprintf(out, MAGIC "tensorrt=%d\nprecision=%s\nonnx=%s\n", getInferLibVersion(), fp16 ? "fp16" : "fp32",
        onnx_path);
    fclose(out);
    if (timing_cache_path != NULL)
    {
        FILE* cache = fopen(timing_cache_path, "ab");
        if (cache != NULL)
        {
            fclose(cache);
        }
    }
    say(log, log_len, "[W] [TRT] stand-in: built %s plan\n", fp16 ? "fp16" : "fp32");
    return TRIDENT_TRT_OK;
}

static int read_full(int fd, void* buf, size_t n)
{
    char* p = buf;
    while (n > 0)
    {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
        {
            if (r < 0 && errno == EINTR)
            {
                continue;
            }
            return -1;
        }
        p += r;
        n -= (size_t) r;
    }
    return 0;
}

static int write_full(int fd, const void* buf, size_t n)
{
    const char* p = buf;
    while (n > 0)
    {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
        {
            if (w < 0 && errno == EINTR)
            {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t) w;
    }
    return 0;
}

static void fill_info(trident_trt_tensor_info* info, const char* name, const long* dims, int n)
{
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", name);
    info->nb_dims = n;
    for (int i = 0; i < n; i++)
    {
        info->dims[i] = dims[i];
    }
}

static void reap(struct trident_trt_engine* e)
{
    if (e->to_child >= 0)
    {
        close(e->to_child);
    }
    if (e->from_child >= 0)
    {
        close(e->from_child);
    }
    if (e->child > 0)
    {
        int status;
        waitpid(e->child, &status, 0);
    }
    free(e);
}

int trident_trt_engine_load(const char* engine_path, const char* input_name, const char* output_name,
    trident_trt_engine** out, trident_trt_tensor_info* input, trident_trt_tensor_info* output, char* log,
    size_t log_len)
{
    *out = NULL;
    if (log && log_len)
    {
        log[0] = '\0';
    }
    FILE* f = fopen(engine_path, "rb");
    if (f == NULL)
    {
        say(log, log_len, "[E] cannot open %s: %s\n", engine_path, strerror(errno));
        return TRIDENT_TRT_BAD_ENGINE;
    }
    char text[4096] = {0};
    size_t got = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[got] = '\0';
    if (strncmp(text, MAGIC, strlen(MAGIC)) != 0)
    {
        say(log, log_len, "[E] 1: [stdArchiveReader.cpp::StdArchiveReader::30] Error Code 1: Serialization "
                          "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)\n"
                          "[E] 4: [runtime.cpp::deserializeCudaEngine::50] Error Code 4: Internal Error "
                          "(Engine deserialization failed.)\n");
        return TRIDENT_TRT_BAD_ENGINE;
    }
    int built_by = 0;
    char precision[8] = {0};
    char onnx[1024] = {0};
    const char* p = text + strlen(MAGIC);
    if (sscanf(p, "tensorrt=%d\nprecision=%7s\nonnx=%1023[^\n]", &built_by, precision, onnx) != 3)
    {
        say(log, log_len, "[E] 1: Serialization (plan truncated)\n");
        return TRIDENT_TRT_BAD_ENGINE;
    }
    if (built_by != getInferLibVersion())
    {
        say(log, log_len,
            "[E] 6: The engine plan file is not compatible with this version of TensorRT, expecting library "
            "version %d got %d, please rebuild.\n",
            getInferLibVersion(), built_by);
        return TRIDENT_TRT_BAD_ENGINE;
    }
    if (failing("cuda"))
    {
        say(log, log_len, "[E] cudaStreamCreate: cudaErrorNoDevice (no CUDA-capable device is detected)\n");
        return TRIDENT_TRT_CUDA;
    }
    char reference_buf[2048];
    const char* reference = setting("REFERENCE", reference_buf, sizeof reference_buf);
    if (reference == NULL || reference[0] == '\0')
    {
        say(log, log_len, "[E] stand-in: no REFERENCE setting (no way to compute outputs)\n");
        return TRIDENT_TRT_CUDA;
    }
    /* Close-on-exec: another engine's reference child must not inherit this one's pipe ends, or
       this child would never see EOF when its engine is freed (and freeing would wait forever). */
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0)
    {
        say(log, log_len, "[E] stand-in: pipe: %s\n", strerror(errno));
        return TRIDENT_TRT_CUDA;
    }
    /* Everything the child needs is prepared before fork: the parent may be multi-threaded. */
    char command[2048];
    snprintf(command, sizeof command, "exec %s \"$0\"", reference);
    pid_t pid = fork();
    if (pid == 0)
    {
        dup2(down[0], 0);
        dup2(up[1], 1);
        close(down[0]);
        close(down[1]);
        close(up[0]);
        close(up[1]);
        execl("/bin/sh", "sh", "-c", command, onnx, (char*) NULL);
        _exit(127);
    }
    close(down[0]);
    close(up[1]);
    struct trident_trt_engine* e = calloc(1, sizeof *e);
    e->child = pid;
    e->to_child = down[1];
    e->from_child = up[0];
    e->fp16 = strcmp(precision, "fp16") == 0;
    /* The header line, byte by byte (no stdio buffering on the pipe). */
    char line[1024] = {0};
    size_t n = 0;
    while (n + 1 < sizeof line && read(e->from_child, line + n, 1) == 1 && line[n] != '\n')
    {
        n++;
    }
    long in_dims[4], out_dims[3];
    char in_name[128] = {0}, out_name[128] = {0};
    if (sscanf(line, "in %ld %ld %ld %ld out %ld %ld %ld names %127s %127s", &in_dims[0], &in_dims[1],
            &in_dims[2], &in_dims[3], &out_dims[0], &out_dims[1], &out_dims[2], in_name, out_name)
        != 9)
    {
        say(log, log_len, "[E] stand-in: the reference (%s) did not start: %s\n", reference, line);
        reap(e);
        return TRIDENT_TRT_CUDA;
    }
    if ((input_name && strcmp(input_name, in_name) != 0) || (output_name && strcmp(output_name, out_name) != 0))
    {
        say(log, log_len, "[E] 3: Cannot find binding of given name: %s\n",
            input_name && strcmp(input_name, in_name) != 0 ? input_name : output_name);
        reap(e);
        return TRIDENT_TRT_BAD_IO;
    }
    e->in_len = (size_t) (in_dims[0] * in_dims[1] * in_dims[2] * in_dims[3]);
    e->out_len = (size_t) (out_dims[0] * out_dims[1] * out_dims[2]);
    fill_info(input, in_name, in_dims, 4);
    fill_info(output, out_name, out_dims, 3);
    *out = e;
    return TRIDENT_TRT_OK;
}

/* Rounds to the nearest float16 value (normal range; trident's outputs stay well inside it). */
static float to_half(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits = (bits + 0x1000u) & ~0x1FFFu;
    float y;
    memcpy(&y, &bits, sizeof y);
    return y;
}

int trident_trt_engine_run(trident_trt_engine* engine, const float* input, size_t input_len, float* output,
    size_t output_len, char* log, size_t log_len)
{
    if (log && log_len)
    {
        log[0] = '\0';
    }
    if (engine == NULL || input_len != engine->in_len || output_len != engine->out_len)
    {
        say(log, log_len, "[E] stand-in: buffer lengths %zu/%zu, the engine takes %zu/%zu\n", input_len, output_len,
            engine ? engine->in_len : 0, engine ? engine->out_len : 0);
        return TRIDENT_TRT_BAD_IO;
    }
    if (failing("run"))
    {
        say(log, log_len, "[E] 1: [reformat.cpp::executeCutensor::385] Error Code 1: CuTensor "
                          "(Internal cuTensor permutate execute failed)\n"
                          "[E] cudaStreamSynchronize: cudaErrorIllegalAddress (an illegal memory access was encountered)\n");
        return TRIDENT_TRT_CUDA;
    }
    if (write_full(engine->to_child, input, input_len * sizeof(float)) != 0
        || read_full(engine->from_child, output, output_len * sizeof(float)) != 0)
    {
        say(log, log_len, "[E] stand-in: the reference process died\n");
        return TRIDENT_TRT_CUDA;
    }
    for (size_t i = 0; i < output_len; i++)
    {
        if (engine->fp16)
        {
            output[i] = to_half(output[i]);
        }
        if (failing("skew"))
        {
            output[i] += 0.5f;
        }
    }
    return TRIDENT_TRT_OK;
}

void trident_trt_engine_free(trident_trt_engine* engine)
{
    if (engine != NULL)
    {
        reap(engine);
    }
}
