import Foundation

/// Engine settings (vLLM's engine arguments).
public struct EngineConfig: Sendable {
    public var maxNumBatchedTokens = 2048
    public var maxNumSeqs = 64
    /// 0: the model's context length (capped by the KV pool).
    public var maxModelLen = 0
    public var blockSize = 16
    /// Bytes for the KV cache; nil: a quarter of physical memory, at most 4 GiB.
    public var kvCacheMemoryBytes: Int? = nil
    /// Element type of the KV cache; nil: `KVCacheDType.automatic(for:)` the model.
    public var kvCacheDtype: KVCacheDType? = nil
    /// Overrides kvCacheMemoryBytes when set.
    public var numKVBlocks: Int? = nil
    public var enablePrefixCaching = true
    /// nil: one per core.
    public var threads: Int? = nil
    /// Requests allowed to wait before new ones are refused.
    public var maxWaiting = 1024

    public init() {}
}

/// A request as the engine's callers submit it.
public struct EngineRequest: Sendable {
    public var id: String
    public var promptTokenIds: [Int]
    public var params: SamplingParams
    public var priority: Int

    public init(id: String, promptTokenIds: [Int], params: SamplingParams, priority: Int = 0) {
        self.id = id
        self.promptTokenIds = promptTokenIds
        self.params = params
        self.priority = priority
    }
}

/// A request the engine refuses.
public enum RequestError: Error, CustomStringConvertible, Sendable, Equatable {
    case invalid(param: String?, message: String)
    case tooLong(promptTokens: Int, maxModelLen: Int)
    case queueFull
    case duplicateId(String)

    public var description: String {
        switch self {
        case .invalid(_, let m): return m
        case .tooLong(let p, let m):
            return "This model's maximum context length is \(m) tokens. However, you requested \(p) tokens in the prompt; reduce the prompt."
        case .queueFull: return "The server is busy: too many requests are waiting. Retry later."
        case .duplicateId(let id): return "A request with id \(id) is already running."
        }
    }
}

/// Timings of a finished sequence, in seconds since an arbitrary origin (monotonic clock).
public struct RequestMetrics: Sendable {
    public var arrival: Double
    public var firstScheduled: Double?
    public var firstToken: Double?
    public var finished: Double
}

/// What a sequence produced in one step.
public struct RequestOutput: Sendable {
    public let requestId: String
    /// Choice index (n > 1).
    public let index: Int
    public let newTokenIds: [Int]
    public let textDelta: String
    public let logprobs: [TokenLogprob]
    public let finishReason: FinishReason?
    /// The stop string or stop token id that ended the sequence.
    public let stopReason: String?
    public let promptTokenCount: Int
    public let numCachedTokens: Int
    /// Prompt log-probabilities (the first is nil), on the first output only.
    public let promptLogprobs: [TokenLogprob?]?
    public let metrics: RequestMetrics?
}

/// Monotonic seconds.
@inline(__always) public func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// The engine's step loop body: schedules, runs the model, samples, detokenizes and applies stop rules.
/// Not thread-safe: one thread drives it (`AsyncEngine`'s loop, or `LLM` in the caller's thread).
public final class EngineCore {
    public let loaded: LoadedModel
    public let config: EngineConfig
    public let scheduler: Scheduler
    public let runner: ModelRunner
    public let maxModelLen: Int
    private var sampler: Sampler
    private var sequences: [SequenceKey: Request] = [:]
    private var arrivals = 0
    public private(set) var promptTokensTotal = 0
    public private(set) var generationTokensTotal = 0
    public private(set) var steps = 0

    public init(loaded: LoadedModel, config: EngineConfig, pool: ThreadPool? = nil) throws {
        self.loaded = loaded
        self.config = config
        let mc = loaded.config
        let kvDtype = config.kvCacheDtype ?? .automatic(for: loaded.model, blockSize: config.blockSize)
        guard kvDtype.supports(headDim: mc.headDim, blockSize: config.blockSize) else {
            throw RequestError.invalid(param: "kv_cache_dtype", message: "a \(kvDtype.rawValue) KV cache needs head and block sizes that are multiples of 16 (head \(mc.headDim), block \(config.blockSize))")
        }
        let blockBytes = KVCacheStorage.bytesPerBlock(config: mc, blockSize: config.blockSize, dtype: kvDtype)
        let blocks: Int
        if let n = config.numKVBlocks {
            blocks = n
        } else {
            let physical = Int(ProcessInfo.processInfo.physicalMemory)
            let bytes = config.kvCacheMemoryBytes ?? min(physical / 4, 4 << 30)
            blocks = bytes / blockBytes
        }
        guard blocks >= 1 else {
            throw RequestError.invalid(param: "kv_cache_memory", message: "the KV cache must hold at least one block of \(blockBytes) bytes")
        }
        let capacity = blocks * config.blockSize
        maxModelLen = min(config.maxModelLen > 0 ? config.maxModelLen : mc.maxPositions, capacity)
        var sc = SchedulerConfig()
        sc.maxNumBatchedTokens = max(1, config.maxNumBatchedTokens)
        sc.maxNumSeqs = max(1, config.maxNumSeqs)
        sc.maxModelLen = maxModelLen
        sc.blockSize = config.blockSize
        sc.enablePrefixCaching = config.enablePrefixCaching
        scheduler = Scheduler(config: sc, blockCount: blocks)
        let cache = KVCacheStorage(config: mc, blockCount: blocks, blockSize: config.blockSize, dtype: kvDtype)
        runner = ModelRunner(model: loaded.model, cache: cache, pool: pool ?? ThreadPool(threadCount: config.threads ?? ThreadPool.defaultThreadCount))
        sampler = Sampler(eosTokenIds: loaded.eosTokenIds)
    }

    public var hasWork: Bool { scheduler.hasWork }
    public var numRunning: Int { scheduler.running.count }
    public var numWaiting: Int { scheduler.waiting.count }
    public var kvCacheUsage: Double { scheduler.kv.usage }
    public var blockBytes: Int { runner.cache.bytesPerBlock }

    /// Checks a request against the model and the engine's limits.
    public func validate(_ r: EngineRequest) throws {
        try validateStatic(r)
        if sequences.keys.contains(where: { $0.id == r.id }) { throw RequestError.duplicateId(r.id) }
    }

    public func add(_ r: EngineRequest) throws {
        try validate(r)
        let seed = r.params.seed ?? UInt64.random(in: 0...UInt64.max)
        let req = Request(id: r.id, promptTokenIds: r.promptTokenIds, params: r.params, priority: r.priority,
                          arrival: arrivals, rng: Xoshiro256(seed: seed), arrivalTime: monotonicNow())
        req.wideTokenCount = runner.model.wideTokenCount(promptLength: r.promptTokenIds.count)
        arrivals += 1
        setUpDetokenizer(req)
        sequences[req.key] = req
        scheduler.add(req)
    }

    private func setUpDetokenizer(_ r: Request) {
        r.detokenizer = IncrementalDetokenizer(tokenizer: loaded.tokenizer, skipSpecialTokens: r.params.skipSpecialTokens,
                                               promptIds: r.promptTokenIds)
    }

    /// Stops every sequence of the request and frees its blocks now. Returns whether anything was running.
    @discardableResult
    public func abort(_ id: String) -> Bool {
        let keys = sequences.keys.filter { $0.id == id }
        for k in keys {
            if let r = sequences.removeValue(forKey: k) { scheduler.finish(r, reason: .abort) }
        }
        return !keys.isEmpty
    }

    /// One engine step. Returns the outputs of every sequence that produced tokens or finished.
    public func step() -> [RequestOutput] {
        let plan = scheduler.schedule()
        if plan.scheduled.isEmpty { return [] }
        steps += 1
        let now = monotonicNow()
        for s in plan.scheduled where s.request.firstScheduledTime == nil { s.request.firstScheduledTime = now }
        let (logits, rows) = runner.execute(plan, kv: scheduler.kv)
        let v = loaded.config.vocabSize
        var outputs: [RequestOutput] = []
        logits.withUnsafeBufferPointer { all in
            for (s, info) in zip(plan.scheduled, rows) {
                let r = s.request
                r.numComputedTokens += s.numNewTokens
                scheduler.kv.cacheFullBlocks(r)
                if let k = r.params.promptLogprobs {
                    if r.promptLogprobs.isEmpty { r.promptLogprobs.append(nil) }
                    for (pos, row) in info.promptRows where pos + 1 == r.promptLogprobs.count {
                        let rowLogits = Array(UnsafeBufferPointer(rebasing: all[row * v..<(row + 1) * v]))
                        let lse = LogProbs.logSumExp(rowLogits)
                        let tok = r.promptTokenIds[pos + 1]
                        r.promptLogprobs.append(TokenLogprob(token: tok, logprob: rowLogits[tok] - lse,
                                                             top: LogProbs.top(rowLogits, k: k).map { ($0.id, $0.logprob) }))
                    }
                }
                guard let row = info.sampleRow else { continue }
                let rowLogits = UnsafeBufferPointer(rebasing: all[row * v..<(row + 1) * v])
                if r.outputTokenIds.isEmpty && !r.hasForked && r.params.n > 1 {
                    promptTokensTotal += r.promptTokenIds.count
                    for child in fork(r) {
                        accept(child, sampler.sample(rowLogits, for: child, rng: &child.rng), now: now, into: &outputs)
                    }
                } else {
                    if r.outputTokenIds.isEmpty && r.numPreemptions == 0 && !r.hasForked { promptTokensTotal += r.promptTokenIds.count }
                    accept(r, sampler.sample(rowLogits, for: r, rng: &r.rng), now: now, into: &outputs)
                }
            }
        }
        return outputs
    }

    /// Splits an n > 1 request into n sequences sharing the prompt's blocks; returns all of them.
    private func fork(_ parent: Request) -> [Request] {
        parent.hasForked = true
        var all = [parent]
        let base = parent.params.seed
        for i in 1..<parent.params.n {
            let rng = Xoshiro256(seed: base.map { $0 &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15 } ?? UInt64.random(in: 0...UInt64.max))
            let child = parent.fork(index: i, rng: rng, arrival: parent.arrival)
            setUpDetokenizer(child)
            scheduler.kv.fork(parent, into: child)
            scheduler.addRunning(child)
            sequences[child.key] = child
            all.append(child)
        }
        return all
    }

    /// Appends a sampled token, applies the stop rules and records the output.
    private func accept(_ r: Request, _ s: Sampler.Result, now: Double, into outputs: inout [RequestOutput]) {
        let p = r.params
        r.appendOutput(s.token)
        generationTokensTotal += 1
        if let lp = s.logprob { r.outputLogprobs.append(lp) }
        if r.firstTokenTime == nil { r.firstTokenTime = now }
        r.lastTokenTime = now
        var finish: FinishReason?
        var hideTokenText = false
        if !p.ignoreEOS && loaded.eosTokenIds.contains(s.token) && r.outputTokenIds.count > p.minTokens - 1 {
            finish = .stop
            hideTokenText = true
        } else if p.stopTokenIds.contains(s.token) && r.outputTokenIds.count >= p.minTokens {
            finish = .stop
            r.stopReason = String(s.token)
            hideTokenText = !p.includeStopStrInOutput
        }
        var delta = r.detokenizer?.append(s.token) ?? ""
        if hideTokenText { delta = "" }
        r.pendingText += delta
        if finish == nil, !p.stop.isEmpty, r.outputTokenIds.count >= p.minTokens {
            let text = r.outputText + r.pendingText
            if let (stop, range) = firstStop(in: text, stops: p.stop, searchFrom: r.outputText.count) {
                finish = .stop
                r.stopReason = stop
                let end = p.includeStopStrInOutput ? range.upperBound : range.lowerBound
                r.pendingText = String(text[text.index(text.startIndex, offsetBy: r.outputText.count)..<end])
            }
        }
        if finish == nil && (r.outputTokenIds.count >= p.maxTokens || r.numTokens >= maxModelLen) { finish = .length }
        if finish != nil && r.stopReason == nil && !hideTokenText { r.pendingText += r.detokenizer?.flush() ?? "" }
        // Emit all text except a tail that could still become a stop string.
        var emit = r.pendingText
        if finish == nil && !p.stop.isEmpty {
            let hold = heldBackSuffix(r.outputText + r.pendingText, stops: p.stop)
            emit = String(r.pendingText.dropLast(min(hold, r.pendingText.count)))
        }
        r.outputText += emit
        r.pendingText.removeFirst(emit.count)
        if let f = finish {
            sequences[r.key] = nil
            scheduler.finish(r, reason: f)
        }
        let newTokens = Array(r.outputTokenIds[r.sentTokenCount...])
        let newLogprobs = Array(r.outputLogprobs[r.sentLogprobCount...])
        let first = r.sentTokenCount == 0
        r.sentTokenCount = r.outputTokenIds.count
        r.sentLogprobCount = r.outputLogprobs.count
        outputs.append(RequestOutput(
            requestId: r.id, index: r.index, newTokenIds: newTokens, textDelta: emit, logprobs: newLogprobs,
            finishReason: finish, stopReason: r.stopReason, promptTokenCount: r.promptTokenIds.count,
            numCachedTokens: r.numCachedTokens,
            promptLogprobs: first && p.promptLogprobs != nil ? r.promptLogprobs : nil,
            metrics: finish == nil ? nil : RequestMetrics(arrival: r.arrivalTime, firstScheduled: r.firstScheduledTime,
                                                         firstToken: r.firstTokenTime, finished: now)))
    }

    /// The earliest stop string in `text` that ends after `searchFrom` characters.
    private func firstStop(in text: String, stops: [String], searchFrom: Int) -> (String, Range<String.Index>)? {
        let longest = stops.map(\.count).max() ?? 0
        let startOffset = max(0, searchFrom - longest + 1)
        let start = text.index(text.startIndex, offsetBy: min(startOffset, text.count))
        var best: (String, Range<String.Index>)?
        for s in stops {
            if let range = text.range(of: s, range: start..<text.endIndex), best == nil || range.lowerBound < best!.1.lowerBound {
                best = (s, range)
            }
        }
        return best
    }

    /// Length of the longest suffix of `text` that is a proper prefix of some stop string.
    private func heldBackSuffix(_ text: String, stops: [String]) -> Int {
        var best = 0
        for s in stops {
            var k = min(s.count - 1, text.count)
            while k > best {
                if text.hasSuffix(String(s.prefix(k))) { best = k; break }
                k -= 1
            }
        }
        return best
    }
}
