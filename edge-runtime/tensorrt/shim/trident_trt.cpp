/*
 * trident's TensorRT engine-build shim: ONNX file in, serialized engine file out, through the
 * TensorRT C++ API. Part of libtrident_trt.so (see trident_trt.h for how it is built and loaded). Written
 * for TensorRT 8.0 and 8.2 (JetPack 4.6 and 4.6.1+, C++14) through 10.x (C++17); version differences are handled with
 * NV_TENSORRT_MAJOR/MINOR checks below. Objects are freed with `delete` (public virtual
 * destructors since TensorRT 8.0; destroy() is deprecated there and removed in 10).
 */
#include "trident_trt.h"

#include <NvInfer.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <vector>

#define TRIDENT_TRT_AT_LEAST(major, minor)                                                                             \
    (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

namespace
{

/* Collects the builder's warnings and errors (and, while parsing, its info messages, where the ONNX
 * parser reports "No importer registered for op: X") for the caller's log buffer. */
class CaptureLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity > Severity::kWARNING && !(mVerbose && severity == Severity::kINFO))
        {
            return;
        }
        try
        {
            char const* tag = severity == Severity::kINTERNAL_ERROR ? "[F] "
                : severity == Severity::kERROR                      ? "[E] "
                : severity == Severity::kWARNING                    ? "[W] "
                                                                    : "[I] ";
            mText += tag;
            mText += msg ? msg : "";
            mText += '\n';
        }
        catch (...)
        {
            /* Out of memory while logging: drop the message rather than throw through TensorRT. */
        }
    }

    void note(std::string const& line)
    {
        log(Severity::kERROR, line.c_str());
    }

    void setVerbose(bool on)
    {
        mVerbose = on;
    }

    std::string const& text() const
    {
        return mText;
    }

private:
    std::string mText;
    bool mVerbose{false};
};

bool looksOutOfMemory(std::string const& text)
{
    std::string lower(text);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) {
        return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    });
    return lower.find("out of memory") != std::string::npos || lower.find("outofmemory") != std::string::npos
        || lower.find("requested amount of gpu memory") != std::string::npos;
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

bool readFile(char const* path, std::vector<char>& out)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        return false;
    }
    out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return !in.bad();
}

/* Writes next to `path` and renames, so a reader never sees half a file. */
bool writeFileAtomic(std::string const& path, void const* data, size_t size)
{
    std::string const tmp = path + ".partial";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(static_cast<char const*>(data), static_cast<std::streamsize>(size));
        out.flush();
        if (!out)
        {
            std::remove(tmp.c_str());
            return false;
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
    {
        std::remove(tmp.c_str());
        return false;
    }
    return true;
}

int buildEngine(char const* onnxPath, char const* enginePath, bool fp16, uint64_t workspaceBytes,
    char const* timingCachePath, CaptureLogger& logger)
{
    using namespace nvinfer1;

    std::unique_ptr<IBuilder> builder(createInferBuilder(logger));
    if (!builder)
    {
        logger.note("createInferBuilder failed (no CUDA device, or the driver/libraries do not match)");
        return TRIDENT_TRT_FAILED;
    }

#if NV_TENSORRT_MAJOR >= 10
    /* Explicit batch is the only mode from TensorRT 10 on; the flag is deprecated there. */
    NetworkDefinitionCreationFlags const flags = 0U;
#else
    /* Required for ONNX models before TensorRT 10. */
    NetworkDefinitionCreationFlags const flags
        = 1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#endif
    std::unique_ptr<INetworkDefinition> network(builder->createNetworkV2(flags));
    if (!network)
    {
        logger.note("createNetworkV2 failed");
        return TRIDENT_TRT_FAILED;
    }

    std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger));
    if (!parser)
    {
        logger.note("nvonnxparser::createParser failed");
        return TRIDENT_TRT_FAILED;
    }
    logger.setVerbose(true);
    bool const parsed = parser->parseFromFile(onnxPath, static_cast<int>(ILogger::Severity::kWARNING));
    logger.setVerbose(false);
    if (!parsed)
    {
        for (int i = 0; i < parser->getNbErrors(); ++i)
        {
            nvonnxparser::IParserError const* err = parser->getError(i);
            logger.note(std::string("[ONNXParser] node ") + std::to_string(err->node()) + ": " + err->desc());
        }
        logger.note(std::string("[ONNXParser] failed to parse ") + onnxPath);
        return TRIDENT_TRT_PARSE_FAILED;
    }

    /* The timing cache must outlive the config that refers to it, so it is declared first. */
    std::unique_ptr<ITimingCache> timingCache;
    std::unique_ptr<IBuilderConfig> config(builder->createBuilderConfig());
    if (!config)
    {
        logger.note("createBuilderConfig failed");
        return TRIDENT_TRT_FAILED;
    }

    if (fp16)
    {
#if NV_TENSORRT_MAJOR >= 11
        logger.note("fp16 requested, but TensorRT 11 removed BuilderFlag::kFP16; export an fp16 ONNX instead");
        return TRIDENT_TRT_FAILED;
#else
        if (!builder->platformHasFastFp16())
        {
            logger.note("fp16 requested, but this GPU has no fast fp16; build fp32 instead");
            return TRIDENT_TRT_FAILED;
        }
        config->setFlag(BuilderFlag::kFP16);
#endif
    }

#if TRIDENT_TRT_AT_LEAST(8, 4)
    config->setMemoryPoolLimit(MemoryPoolType::kWORKSPACE, static_cast<size_t>(workspaceBytes));
#else
    config->setMaxWorkspaceSize(static_cast<size_t>(workspaceBytes));
#endif

    if (timingCachePath != nullptr)
    {
        std::vector<char> blob;
        bool const haveFile = readFile(timingCachePath, blob);
        timingCache.reset(config->createTimingCache(blob.data(), blob.size()));
        if (timingCache && !config->setTimingCache(*timingCache, false))
        {
            /* A cache from another GPU or TensorRT version: start afresh rather than mix timings. */
            logger.log(ILogger::Severity::kWARNING,
                (std::string("timing cache ") + timingCachePath + " does not match this device; starting a new one")
                    .c_str());
            timingCache.reset(config->createTimingCache(nullptr, 0));
            if (timingCache)
            {
                config->setTimingCache(*timingCache, false);
            }
        }
        else if (!haveFile)
        {
            logger.log(ILogger::Severity::kINFO, "no timing cache yet; creating one");
        }
    }

    std::unique_ptr<IHostMemory> serialized(builder->buildSerializedNetwork(*network, *config));
    if (!serialized || serialized->size() == 0)
    {
        logger.note("buildSerializedNetwork failed");
        return looksOutOfMemory(logger.text()) ? TRIDENT_TRT_OUT_OF_MEMORY : TRIDENT_TRT_FAILED;
    }

    {
        std::ofstream out(enginePath, std::ios::binary | std::ios::trunc);
        out.write(static_cast<char const*>(serialized->data()), static_cast<std::streamsize>(serialized->size()));
        out.flush();
        if (!out)
        {
            logger.note(std::string("cannot write the engine to ") + enginePath);
            return TRIDENT_TRT_FAILED;
        }
    }

    if (timingCachePath != nullptr && config->getTimingCache() != nullptr)
    {
        std::unique_ptr<IHostMemory> cacheBlob(config->getTimingCache()->serialize());
        if (!cacheBlob || !writeFileAtomic(timingCachePath, cacheBlob->data(), cacheBlob->size()))
        {
            /* The engine is fine; a lost timing cache only makes the next build slower. */
            logger.log(ILogger::Severity::kWARNING,
                (std::string("could not save the timing cache to ") + timingCachePath).c_str());
        }
    }
    return TRIDENT_TRT_OK;
}

} // namespace

extern "C" int32_t trident_trt_abi_version(void)
{
    return TRIDENT_TRT_ABI_VERSION;
}

extern "C" void trident_trt_compiled_version(int32_t* major, int32_t* minor, int32_t* patch)
{
    *major = NV_TENSORRT_MAJOR;
    *minor = NV_TENSORRT_MINOR;
    *patch = NV_TENSORRT_PATCH;
}

extern "C" int32_t trident_trt_runtime_version(void)
{
    return getInferLibVersion();
}

extern "C" int trident_trt_build(char const* onnx_path, char const* engine_path, int fp16, uint64_t workspace_bytes,
    char const* timing_cache_path, char* log, size_t log_len)
{
    CaptureLogger logger;
    int status = TRIDENT_TRT_FAILED;
    try
    {
        if (onnx_path == nullptr || engine_path == nullptr)
        {
            logger.note("onnx_path and engine_path must not be NULL");
        }
        else
        {
            status = buildEngine(onnx_path, engine_path, fp16 != 0, workspace_bytes, timing_cache_path, logger);
        }
    }
    catch (std::bad_alloc const&)
    {
        logger.note("std::bad_alloc: out of host memory");
        status = TRIDENT_TRT_OUT_OF_MEMORY;
    }
    catch (std::exception const& e)
    {
        logger.note(std::string("C++ exception: ") + e.what());
        status = TRIDENT_TRT_FAILED;
    }
    catch (...)
    {
        logger.note("unknown C++ exception");
        status = TRIDENT_TRT_FAILED;
    }
    try
    {
        copyTail(logger.text(), log, log_len);
    }
    catch (...)
    {
        if (log != nullptr && log_len > 0)
        {
            log[0] = '\0';
        }
    }
    return status;
}
