import ArgumentParser
import Foundation
import Pagoda

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks (like `vllm bench`).",
        subcommands: [BenchServeCommand.self, BenchLatencyCommand.self, BenchThroughputCommand.self, BenchKernelsCommand.self])
}

/// Engine options shared by the offline benchmarks.
struct BenchEngineOptions: ParsableArguments {
    @Option(help: "GGUF file or Hugging Face folder.") var model = defaultModelPath
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Token budget per engine step.") var maxNumBatchedTokens: Int?
    @Option(help: "Sequences per step.") var maxNumSeqs: Int?
    @Option(help: "KV block size in tokens.") var blockSize = 16
    @Option(help: "Bytes for the KV cache.") var kvCacheMemory: Int?
    @Option(help: KVCacheDtypeArgument.help) var kvCacheDtype = KVCacheDtypeArgument.auto
    @Flag(help: "Turn automatic prefix caching off.") var noEnablePrefixCaching = false
    @Option(help: "Random seed for the prompts.") var seed: UInt64 = 0

    func engineConfig(batch: Int, inputLen: Int, outputLen: Int) -> EngineConfig {
        var c = EngineConfig()
        c.threads = threads
        c.blockSize = blockSize
        c.maxNumSeqs = maxNumSeqs ?? max(batch, 1)
        c.maxNumBatchedTokens = maxNumBatchedTokens ?? max(2048, min(batch * inputLen, 8192))
        c.kvCacheMemoryBytes = kvCacheMemory
        c.kvCacheDtype = kvCacheDtype.dtype
        c.enablePrefixCaching = !noEnablePrefixCaching
        c.maxModelLen = inputLen + outputLen
        return c
    }

    /// `count` prompts of exactly `length` ordinary token ids (no special tokens), different per prompt.
    func prompts(count: Int, length: Int, vocab: Int, special: Set<Int>) -> [[Int]] {
        var rng = Xoshiro256(seed: seed)
        return (0..<count).map { _ in
            var p: [Int] = []
            while p.count < length {
                let id = Int(rng.next() % UInt64(vocab))
                if !special.contains(id) { p.append(id) }
            }
            return p
        }
    }
}

func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return 0 }
    let s = xs.sorted()
    let rank = p / 100 * Double(s.count - 1)
    let lo = Int(rank.rounded(.down)), hi = Int(rank.rounded(.up))
    return s[lo] + (s[hi] - s[lo]) * (rank - Double(lo))
}

func specialIds(_ tok: Tokenizer) -> Set<Int> {
    Set((0..<tok.vocabSize).filter { tok.isSpecial($0) })
}

struct BenchLatencyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latency", abstract: "Time one batch end to end: prefill of B×I tokens, then O−1 decode steps.")

    @OptionGroup var engine: BenchEngineOptions
    @Option(help: "Prompts in the batch.") var batchSize = 1
    @Option(help: "Prompt length in tokens.") var inputLen = 128
    @Option(help: "Tokens generated per prompt.") var outputLen = 128
    @Option(help: "Untimed runs first.") var numItersWarmup = 1
    @Option(help: "Timed runs.") var numIters = 3
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let loaded = try ModelLoader.load(path: engine.model)
        let prompts = engine.prompts(count: batchSize, length: inputLen, vocab: loaded.config.vocabSize, special: specialIds(loaded.tokenizer))
        var params = SamplingParams.greedy
        params.maxTokens = outputLen
        params.ignoreEOS = true
        var config = engine.engineConfig(batch: batchSize, inputLen: inputLen, outputLen: outputLen)
        config.enablePrefixCaching = false  // every iteration recomputes its prompts
        let core = try EngineCore(loaded: loaded, config: config)
        var latencies: [Double] = [], prefillTimes: [Double] = [], decodeTimes: [Double] = []
        for iter in 0..<(numItersWarmup + numIters) {
            if iter == numItersWarmup { _ = takeForwardProfile() }
            let start = monotonicNow()
            for (i, p) in prompts.enumerated() {
                try core.add(EngineRequest(id: "lat-\(iter)-\(i)", promptTokenIds: p, params: params))
            }
            var prefillDone: Double?
            while core.hasWork {
                _ = core.step()
                if prefillDone == nil {
                    // The batch's first tokens are out once no sequence is still waiting for its first token.
                    let pending = core.scheduler.waiting.count + core.scheduler.running.filter { $0.outputTokenIds.isEmpty }.count
                    if pending == 0 {
                        prefillDone = monotonicNow()
                        if let p = takeForwardProfile() { FileHandle.standardError.write(Data((p + "\n").utf8)) }
                    }
                }
            }
            let end = monotonicNow()
            if let p = takeForwardProfile(), iter >= numItersWarmup { FileHandle.standardError.write(Data((p + "\n").utf8)) }
            if iter >= numItersWarmup {
                latencies.append(end - start)
                prefillTimes.append((prefillDone ?? end) - start)
                decodeTimes.append(end - (prefillDone ?? end))
            }
        }
        let avg = latencies.reduce(0, +) / Double(latencies.count)
        let prefill = prefillTimes.reduce(0, +) / Double(prefillTimes.count)
        let decode = decodeTimes.reduce(0, +) / Double(decodeTimes.count)
        let prefillRate = Double(batchSize * inputLen) / prefill
        let decodeRate = decode > 0 ? Double(batchSize * (outputLen - 1)) / decode : 0
        if json {
            writeStdout(try jsonString([
                "batch_size": batchSize, "input_len": inputLen, "output_len": outputLen,
                "avg_latency_s": avg, "prefill_s": prefill, "decode_s": decode,
                "prefill_tokens_per_s": prefillRate, "decode_tokens_per_s": decodeRate,
                "latencies_s": latencies,
                "percentiles_s": ["10": percentile(latencies, 10), "25": percentile(latencies, 25), "50": percentile(latencies, 50),
                                  "75": percentile(latencies, 75), "90": percentile(latencies, 90), "99": percentile(latencies, 99)],
            ]) + "\n")
        } else {
            writeStdout(String(format: "Avg latency: %.4f seconds\n", avg))
            for p in [10.0, 25, 50, 75, 90, 99] { writeStdout(String(format: "%.0f%% percentile latency: %.4f seconds\n", p, percentile(latencies, p))) }
            writeStdout(String(format: "Prefill: %.1f tokens/s (%d tokens in %.4f s)\n", prefillRate, batchSize * inputLen, prefill))
            writeStdout(String(format: "Decode: %.1f tokens/s (%d tokens in %.4f s)\n", decodeRate, batchSize * (outputLen - 1), decode))
        }
    }
}

struct BenchThroughputCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput", abstract: "Run N prompts through the offline API and report requests/s and tokens/s.")

    @OptionGroup var engine: BenchEngineOptions
    @Option(help: "Number of prompts.") var numPrompts = 64
    @Option(help: "Prompt length in tokens.") var inputLen = 128
    @Option(help: "Tokens generated per prompt (ignore_eos).") var outputLen = 128
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let loaded = try ModelLoader.load(path: engine.model)
        let prompts = engine.prompts(count: numPrompts, length: inputLen, vocab: loaded.config.vocabSize, special: specialIds(loaded.tokenizer))
        var params = SamplingParams.greedy
        params.maxTokens = outputLen
        params.ignoreEOS = true
        var config = engine.engineConfig(batch: numPrompts, inputLen: inputLen, outputLen: outputLen)
        config.maxNumSeqs = engine.maxNumSeqs ?? min(numPrompts, 256)
        let llm = try LLM(loaded: loaded, config: config)
        let start = monotonicNow()
        let results = try llm.generate(promptTokenIds: prompts, params)
        let elapsed = monotonicNow() - start
        if let p = takeForwardProfile() { FileHandle.standardError.write(Data((p + "\n").utf8)) }
        let outputTokens = results.reduce(0) { $0 + $1.outputs.reduce(0) { $0 + $1.tokenIds.count } }
        let promptTokens = prompts.reduce(0) { $0 + $1.count }
        let latencies = results.flatMap { $0.metrics.map { $0.finished - $0.arrival } }
        let ttfts = results.flatMap { $0.metrics.compactMap { m in m.firstToken.map { $0 - m.arrival } } }
        let stats: [String: Any] = [
            "num_prompts": numPrompts, "input_len": inputLen, "output_len": outputLen, "elapsed_s": elapsed,
            "requests_per_s": Double(numPrompts) / elapsed,
            "total_tokens_per_s": Double(promptTokens + outputTokens) / elapsed,
            "output_tokens_per_s": Double(outputTokens) / elapsed,
            "prompt_tokens": promptTokens, "output_tokens": outputTokens,
            "latency_p50_s": percentile(latencies, 50), "latency_p90_s": percentile(latencies, 90), "latency_p99_s": percentile(latencies, 99),
            "ttft_p50_s": percentile(ttfts, 50), "ttft_p99_s": percentile(ttfts, 99),
        ]
        if json {
            writeStdout(try jsonString(stats) + "\n")
        } else {
            writeStdout(String(format: "Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n",
                               Double(numPrompts) / elapsed, Double(promptTokens + outputTokens) / elapsed, Double(outputTokens) / elapsed))
            writeStdout("Total num prompt tokens:  \(promptTokens)\nTotal num output tokens:  \(outputTokens)\n")
            writeStdout(String(format: "Latency p50/p90/p99: %.3f / %.3f / %.3f s; TTFT p50/p99: %.3f / %.3f s\n",
                               percentile(latencies, 50), percentile(latencies, 90), percentile(latencies, 99),
                               percentile(ttfts, 50), percentile(ttfts, 99)))
        }
    }
}

struct BenchKernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Per-op speed (GOP/s, GB/s) of the kernels on layer-shaped inputs, against the machine's measured peaks.")

    @Option(help: "Model whose layer shapes to use (only its metadata is read).") var model = defaultModelPath
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Weight types to measure, comma separated.") var dtypes = "q4_0,q4_1,q8_0,q4_K,q6_K,f16,bf16,f32"
    @Option(help: "Tokens of the batched GEMM and of decode attention.") var batch = 64
    @Option(help: "Tokens of the prompt-sized GEMM and of prefill attention.") var prompt = 512
    @Option(help: "Context of each sequence in decode attention.") var context = 512
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let shapes: KernelBenchmark.Shapes
        if FileManager.default.fileExists(atPath: model) {
            shapes = KernelBenchmark.Shapes(try ModelLoader.loadConfig(path: model))
        } else {
            shapes = .smolLM2
        }
        var types: [DType] = []
        for name in dtypes.split(separator: ",") {
            guard let t = DType.named(String(name.trimmingCharacters(in: .whitespaces))) else {
                throw ValidationError("unknown dtype '\(name)' (try q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K, f16, bf16, f32)")
            }
            types.append(t)
        }
        let pool = ThreadPool(threadCount: threads ?? ThreadPool.defaultThreadCount)
        let (peaks, results) = KernelBenchmark.run(shapes: shapes, pool: pool, dtypes: types, batch: batch, prompt: prompt,
                                                   context: context, log: json ? { _ in } : { writeStdout($0 + "\n") })
        if json {
            let data = try JSONEncoder().encode(KernelReport(peaks: peaks, results: results))
            writeStdout(String(decoding: data, as: UTF8.self) + "\n")
        }
    }

    struct KernelReport: Encodable {
        var peaks: KernelBenchmark.Peaks
        var results: [KernelBenchmark.Result]
    }
}
