/*
 * trident's TensorRT engine runtime: a serialized engine in, float32 tensors through it, behind the
 * C interface declared in trident_trt.h (Rust side: src/engine.rs). Compiled only with the crate's
 * `tensorrt` feature (build.rs), like trident_trt.cpp.
 *
 * Written for TensorRT 8.2 (JetPack 4.6: bindings, enqueueV2) and kept compiling on 8.5+ and 10,
 * where the binding API is deprecated (8.5) or removed (10) in favour of named IO tensors and
 * enqueueV3; NV_TENSORRT_MAJOR/MINOR pick the branch. Every buffer is allocated at load time and
 * reused, so a frame costs two copies and one enqueue. No C++ exception leaves this file.
 */
#include "trident_trt.h"

#include <NvInfer.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <vector>

#define TRIDENT_TRT_AT_LEAST(major, minor)                                                                             \
    (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

namespace
{

/* Where the runtime logger writes while a shim call runs on this thread (NULL outside calls).
 * TensorRT logs deserialization and enqueue problems synchronously on the calling thread, so a
 * thread-local sink gives each call its own messages without a lock. */
thread_local std::string* tSink = nullptr;

/* A message longer than this is cut from the front: the caller's buffer keeps the tail anyway. */
constexpr size_t kMaxLogBytes = 64 * 1024;

class RuntimeLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity > Severity::kWARNING)
        {
            return;
        }
        try
        {
            std::string line = severity == Severity::kINTERNAL_ERROR ? "[F] "
                : severity == Severity::kERROR                       ? "[E] "
                                                                     : "[W] ";
            line += msg ? msg : "";
            line += '\n';
            if (tSink != nullptr)
            {
                *tSink += line;
                if (tSink->size() > kMaxLogBytes)
                {
                    tSink->erase(0, tSink->size() - kMaxLogBytes);
                }
            }
            else
            {
                /* A message from one of TensorRT's own threads: nobody is collecting it. */
                std::fputs(("[TensorRT] " + line).c_str(), stderr);
            }
        }
        catch (...)
        {
            /* Out of memory while logging: drop the message rather than throw through TensorRT. */
        }
    }
};

/* One logger for every runtime of the process, deliberately never destroyed. TensorRT keeps the
 * first logger it is given as its global logger for as long as any of its objects lives, so a
 * per-engine logger freed with its engine could be called after its death. It is thread-safe, as
 * TensorRT 10 requires: its only state is the thread-local sink. */
RuntimeLogger& runtimeLogger()
{
    static RuntimeLogger* const logger = new RuntimeLogger();
    return *logger;
}

/* Points the logger at `text` for the lifetime of the scope. */
class SinkScope
{
public:
    explicit SinkScope(std::string& text)
        : mPrevious(tSink)
    {
        tSink = &text;
    }
    ~SinkScope()
    {
        tSink = mPrevious;
    }
    SinkScope(SinkScope const&) = delete;
    SinkScope& operator=(SinkScope const&) = delete;

private:
    std::string* mPrevious;
};

void note(std::string& log, std::string const& line)
{
    log += "[E] ";
    log += line;
    log += '\n';
}

/* Copies the tail of `text` (what fits) into buf, NUL-terminated. */
void copyTail(std::string const& text, char* buf, size_t len)
{
    if (buf == nullptr || len == 0)
    {
        return;
    }
    size_t const n = std::min(text.size(), len - 1);
    std::memcpy(buf, text.data() + (text.size() - n), n);
    buf[n] = '\0';
}

/* Records a failed CUDA call; returns the status it maps to. */
int cudaFailure(std::string& log, char const* what, cudaError_t err)
{
    note(log, std::string(what) + " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
    return err == cudaErrorMemoryAllocation ? TRIDENT_TRT_OUT_OF_MEMORY : TRIDENT_TRT_CUDA;
}

/* Bytes per element; an upper bound for types this file does not name, since over-allocating the
 * buffer of a tensor trident never reads is harmless and under-allocating is not. */
size_t elementBytes(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    case nvinfer1::DataType::kINT8: return 1;
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kBOOL: return 1;
    default: return 8;
    }
}

/* One IO tensor, at its index in the engine's binding (< 8.5) or IO tensor (>= 8.5) order. */
struct IoTensor
{
    std::string name;
    bool isInput{false};
    nvinfer1::Dims dims{};
    nvinfer1::DataType type{nvinfer1::DataType::kFLOAT};
};

std::vector<IoTensor> listIo(nvinfer1::ICudaEngine const& engine)
{
    std::vector<IoTensor> io;
#if TRIDENT_TRT_AT_LEAST(8, 5)
    for (int32_t i = 0; i < engine.getNbIOTensors(); ++i)
    {
        char const* name = engine.getIOTensorName(i);
        IoTensor t;
        t.name = name ? name : "";
        t.isInput = engine.getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
        t.dims = engine.getTensorShape(name);
        t.type = engine.getTensorDataType(name);
        io.push_back(t);
    }
#else
    for (int32_t i = 0; i < engine.getNbBindings(); ++i)
    {
        char const* name = engine.getBindingName(i);
        IoTensor t;
        t.name = name ? name : "";
        t.isInput = engine.bindingIsInput(i);
        t.dims = engine.getBindingDimensions(i);
        t.type = engine.getBindingDataType(i);
        io.push_back(t);
    }
#endif
    return io;
}

/* The index of the tensor named `name` (by getBindingIndex before 8.5), or -1. */
int32_t findIo(nvinfer1::ICudaEngine const& engine, std::vector<IoTensor> const& io, char const* name)
{
#if TRIDENT_TRT_AT_LEAST(8, 5)
    (void) engine;
    for (size_t i = 0; i < io.size(); ++i)
    {
        if (io[i].name == name)
        {
            return static_cast<int32_t>(i);
        }
    }
    return -1;
#else
    (void) io;
    return engine.getBindingIndex(name);
#endif
}

std::string describe(std::vector<IoTensor> const& io)
{
    std::string s;
    for (IoTensor const& t : io)
    {
        s += (s.empty() ? "" : ", ") + std::string(t.isInput ? "input " : "output ") + t.name;
    }
    return s.empty() ? "none" : s;
}

/* Element count of static dims, or 0 when a dimension is dynamic (-1) or the rank is unusable. */
size_t volume(nvinfer1::Dims const& dims)
{
    if (dims.nbDims < 0 || dims.nbDims > TRIDENT_TRT_MAX_DIMS)
    {
        return 0;
    }
    size_t n = 1;
    for (int32_t k = 0; k < dims.nbDims; ++k)
    {
        if (dims.d[k] < 0)
        {
            return 0;
        }
        n *= static_cast<size_t>(dims.d[k]);
    }
    return n;
}

void fillInfo(IoTensor const& t, trident_trt_tensor_info* info)
{
    if (info == nullptr)
    {
        return;
    }
    std::memset(info, 0, sizeof(*info));
    size_t const n = std::min(t.name.size(), sizeof(info->name) - 1);
    std::memcpy(info->name, t.name.data(), n);
    info->nb_dims = t.dims.nbDims;
    for (int32_t k = 0; k < t.dims.nbDims && k < TRIDENT_TRT_MAX_DIMS; ++k)
    {
        info->dims[k] = static_cast<int64_t>(t.dims.d[k]);
    }
}

} // namespace

/* Declared (opaque) in trident_trt.h. Members are destroyed context first, then engine, then
 * runtime, as TensorRT requires; the destructor waits for queued work before freeing the buffers
 * and the stream it uses. */
struct trident_trt_engine
{
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    cudaStream_t stream{nullptr};
    bool haveStream{false};
    /* Device buffers by IO index; enqueueV2 takes this array as its bindings. */
    std::vector<void*> buffers;
    int32_t input{-1};
    int32_t output{-1};
    size_t inputCount{0};
    size_t outputCount{0};

    trident_trt_engine() = default;
    trident_trt_engine(trident_trt_engine const&) = delete;
    trident_trt_engine& operator=(trident_trt_engine const&) = delete;

    ~trident_trt_engine()
    {
        if (haveStream)
        {
            (void) cudaStreamSynchronize(stream);
        }
        context.reset();
        engine.reset();
        runtime.reset();
        for (void* b : buffers)
        {
            if (b != nullptr)
            {
                (void) cudaFree(b);
            }
        }
        if (haveStream)
        {
            (void) cudaStreamDestroy(stream);
        }
    }
};

namespace
{

int loadEngine(char const* enginePath, char const* inputName, char const* outputName,
    std::unique_ptr<trident_trt_engine>& out, trident_trt_tensor_info* inputInfo,
    trident_trt_tensor_info* outputInfo, std::string& log)
{
    using namespace nvinfer1;

    std::vector<char> blob;
    {
        std::ifstream in(enginePath, std::ios::binary);
        if (!in)
        {
            note(log, std::string("cannot open ") + enginePath);
            return TRIDENT_TRT_BAD_ENGINE;
        }
        blob.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        if (in.bad() || blob.empty())
        {
            note(log, std::string("cannot read ") + enginePath + " (or it is empty)");
            return TRIDENT_TRT_BAD_ENGINE;
        }
    }

    std::unique_ptr<trident_trt_engine> e(new trident_trt_engine());
    e->runtime.reset(createInferRuntime(runtimeLogger()));
    if (!e->runtime)
    {
        note(log, "createInferRuntime failed (no CUDA device, or the driver/libraries do not match)");
        return TRIDENT_TRT_FAILED;
    }
    e->engine.reset(e->runtime->deserializeCudaEngine(blob.data(), blob.size()));
    if (!e->engine)
    {
        note(log,
            std::string("cannot deserialize ") + enginePath
                + ": built by another TensorRT version or for another GPU, or corrupt");
        return TRIDENT_TRT_BAD_ENGINE;
    }
    blob.clear();
    blob.shrink_to_fit(); /* a Nano's 4 GB are shared with the GPU: do not keep a second copy */

    std::vector<IoTensor> const io = listIo(*e->engine);
    if (inputName != nullptr)
    {
        e->input = findIo(*e->engine, io, inputName);
    }
    else if (std::count_if(io.begin(), io.end(), [](IoTensor const& t) { return t.isInput; }) == 1)
    {
        e->input = static_cast<int32_t>(
            std::find_if(io.begin(), io.end(), [](IoTensor const& t) { return t.isInput; }) - io.begin());
    }
    if (outputName != nullptr)
    {
        e->output = findIo(*e->engine, io, outputName);
    }
    else
    {
        auto const first = std::find_if(io.begin(), io.end(), [](IoTensor const& t) { return !t.isInput; });
        e->output = first == io.end() ? -1 : static_cast<int32_t>(first - io.begin());
    }
    if (e->input < 0 || e->output < 0 || !io[static_cast<size_t>(e->input)].isInput
        || io[static_cast<size_t>(e->output)].isInput)
    {
        note(log,
            std::string("expected input ") + (inputName ? inputName : "(the only one)") + " and output "
                + (outputName ? outputName : "(the first)") + "; the engine has " + describe(io));
        return TRIDENT_TRT_BAD_IO;
    }
    for (int32_t idx : {e->input, e->output})
    {
        IoTensor const& t = io[static_cast<size_t>(idx)];
        if (t.type != DataType::kFLOAT)
        {
            note(log, "tensor " + t.name + " is not float32; trident engines keep float32 IO (build from the FP32 ONNX)");
            return TRIDENT_TRT_BAD_IO;
        }
        if (volume(t.dims) == 0)
        {
            note(log, "tensor " + t.name + " has a dynamic or empty shape; trident engines have static shapes");
            return TRIDENT_TRT_BAD_IO;
        }
    }
    e->inputCount = volume(io[static_cast<size_t>(e->input)].dims);
    e->outputCount = volume(io[static_cast<size_t>(e->output)].dims);

    e->context.reset(e->engine->createExecutionContext());
    if (!e->context)
    {
        note(log, "createExecutionContext failed (usually out of GPU memory for the activations)");
        return TRIDENT_TRT_OUT_OF_MEMORY;
    }
    cudaError_t err = cudaStreamCreate(&e->stream);
    if (err != cudaSuccess)
    {
        return cudaFailure(log, "cudaStreamCreate", err);
    }
    e->haveStream = true;

    e->buffers.assign(io.size(), nullptr);
    for (size_t i = 0; i < io.size(); ++i)
    {
        /* Tensors trident does not read still need memory: enqueue writes every output. */
        size_t const bytes = std::max<size_t>(volume(io[i].dims), 1) * elementBytes(io[i].type);
        err = cudaMalloc(&e->buffers[i], bytes);
        if (err != cudaSuccess)
        {
            e->buffers[i] = nullptr;
            return cudaFailure(log, ("cudaMalloc for tensor " + io[i].name).c_str(), err);
        }
#if TRIDENT_TRT_AT_LEAST(8, 5)
        /* Addresses never change, so they are bound once here instead of per enqueue. */
        if (!e->context->setTensorAddress(io[i].name.c_str(), e->buffers[i]))
        {
            note(log, "setTensorAddress failed for tensor " + io[i].name);
            return TRIDENT_TRT_FAILED;
        }
#endif
    }

    fillInfo(io[static_cast<size_t>(e->input)], inputInfo);
    fillInfo(io[static_cast<size_t>(e->output)], outputInfo);
    out = std::move(e);
    return TRIDENT_TRT_OK;
}

int runEngine(trident_trt_engine& e, float const* input, size_t inputLen, float* output, size_t outputLen,
    std::string& log)
{
    if (input == nullptr || output == nullptr || inputLen != e.inputCount || outputLen != e.outputCount)
    {
        note(log,
            "buffers of " + std::to_string(inputLen) + " input and " + std::to_string(outputLen)
                + " output floats; the engine takes " + std::to_string(e.inputCount) + " and gives "
                + std::to_string(e.outputCount));
        return TRIDENT_TRT_BAD_IO;
    }
    size_t const in = static_cast<size_t>(e.input);
    size_t const out = static_cast<size_t>(e.output);
    cudaError_t err
        = cudaMemcpyAsync(e.buffers[in], input, inputLen * sizeof(float), cudaMemcpyHostToDevice, e.stream);
    if (err != cudaSuccess)
    {
        return cudaFailure(log, "cudaMemcpyAsync (input)", err);
    }
#if TRIDENT_TRT_AT_LEAST(8, 5)
    bool const queued = e.context->enqueueV3(e.stream);
#else
    bool const queued = e.context->enqueueV2(e.buffers.data(), e.stream, nullptr);
#endif
    if (!queued)
    {
        (void) cudaStreamSynchronize(e.stream);
        note(log, "enqueue failed");
        return TRIDENT_TRT_FAILED;
    }
    err = cudaMemcpyAsync(output, e.buffers[out], outputLen * sizeof(float), cudaMemcpyDeviceToHost, e.stream);
    if (err != cudaSuccess)
    {
        (void) cudaStreamSynchronize(e.stream);
        return cudaFailure(log, "cudaMemcpyAsync (output)", err);
    }
    /* The caller's buffers are borrowed only for this call: nothing may still be in flight. */
    err = cudaStreamSynchronize(e.stream);
    if (err != cudaSuccess)
    {
        return cudaFailure(log, "cudaStreamSynchronize", err);
    }
    return TRIDENT_TRT_OK;
}

/* Runs `body`, turning any C++ exception into a status and a log line. */
template <typename F>
int guarded(std::string& log, F body)
{
    try
    {
        return body();
    }
    catch (std::bad_alloc const&)
    {
        note(log, "std::bad_alloc: out of host memory");
        return TRIDENT_TRT_OUT_OF_MEMORY;
    }
    catch (std::exception const& e)
    {
        note(log, std::string("C++ exception: ") + e.what());
        return TRIDENT_TRT_FAILED;
    }
    catch (...)
    {
        note(log, "unknown C++ exception");
        return TRIDENT_TRT_FAILED;
    }
}

void finishLog(std::string const& text, char* log, size_t logLen)
{
    try
    {
        copyTail(text, log, logLen);
    }
    catch (...)
    {
        if (log != nullptr && logLen > 0)
        {
            log[0] = '\0';
        }
    }
}

} // namespace

extern "C" int trident_trt_engine_load(char const* engine_path, char const* input_name, char const* output_name,
    trident_trt_engine** out, trident_trt_tensor_info* input, trident_trt_tensor_info* output, char* log,
    size_t log_len)
{
    std::string text;
    if (out != nullptr)
    {
        *out = nullptr;
    }
    int const status = guarded(text, [&]() -> int {
        SinkScope scope(text);
        if (engine_path == nullptr || out == nullptr)
        {
            note(text, "engine_path and out must not be NULL");
            return TRIDENT_TRT_FAILED;
        }
        std::unique_ptr<trident_trt_engine> e;
        int const s = loadEngine(engine_path, input_name, output_name, e, input, output, text);
        if (s == TRIDENT_TRT_OK)
        {
            *out = e.release();
        }
        return s;
    });
    finishLog(text, log, log_len);
    return status;
}

extern "C" int trident_trt_engine_run(trident_trt_engine* engine, float const* input, size_t input_len,
    float* output, size_t output_len, char* log, size_t log_len)
{
    std::string text;
    int const status = guarded(text, [&]() -> int {
        SinkScope scope(text);
        if (engine == nullptr)
        {
            note(text, "engine must not be NULL");
            return TRIDENT_TRT_FAILED;
        }
        return runEngine(*engine, input, input_len, output, output_len, text);
    });
    finishLog(text, log, log_len);
    return status;
}

extern "C" void trident_trt_engine_free(trident_trt_engine* engine)
{
    /* Nothing here throws: TensorRT's destructors are noexcept and the CUDA calls are C. What
     * TensorRT logs while tearing down goes to stderr, as there is no caller buffer. */
    delete engine;
}
