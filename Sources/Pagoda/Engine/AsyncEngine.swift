import Foundation
import Synchronization

/// Counters and gauges of a running engine.
public struct EngineStats: Sendable {
    public var numRunning = 0
    public var numWaiting = 0
    /// Fraction of KV blocks in use (0...1).
    public var kvCacheUsage = 0.0
    public var kvBlocksTotal = 0
    public var kvBlocksUsed = 0
    public var kvBlockBytes = 0
    /// Prefix-cache lookups and hits, in tokens.
    public var prefixCacheQueries = 0
    public var prefixCacheHits = 0
    public var numPreemptions = 0
    public var promptTokensTotal = 0
    public var generationTokensTotal = 0
    public var computedTokensTotal = 0
    public var steps = 0
}

/// The engine's asynchronous front: requests go in from any task, `EngineCore` steps on its own thread,
/// and each request's outputs stream back. Ending a stream early (a cancelled consumer, a dropped client)
/// aborts the request and frees its KV blocks at the next step boundary.
public final class AsyncEngine: Sendable {
    public let loaded: LoadedModel
    public let maxModelLen: Int
    public let maxWaiting: Int

    private struct Inbox {
        var adds: [(EngineRequest, AsyncStream<RequestOutput>.Continuation)] = []
        var aborts: [String] = []
        var streams: [String: AsyncStream<RequestOutput>.Continuation] = [:]
        var stats = EngineStats()
        var stopping = false
    }

    private let inbox = Mutex(Inbox())
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private nonisolated(unsafe) let core: EngineCore

    public init(loaded: LoadedModel, config: EngineConfig) throws {
        self.loaded = loaded
        core = try EngineCore(loaded: loaded, config: config)
        maxModelLen = core.maxModelLen
        maxWaiting = config.maxWaiting
        let initial = Self.snapshot(core)
        inbox.withLock { $0.stats = initial }
        let thread = Thread { [self] in self.loop() }
        thread.name = "pagoda-engine"
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// Loads a model (GGUF file or Hugging Face folder) and starts the engine.
    public static func load(modelPath: String, config: EngineConfig, progress: (String) -> Void = { _ in }) throws -> AsyncEngine {
        let loaded = try ModelLoader.load(path: modelPath, progress: progress)
        return try AsyncEngine(loaded: loaded, config: config)
    }

    public var tokenizer: Tokenizer { loaded.tokenizer }
    public var chatTemplate: ChatTemplate? { loaded.chatTemplate }
    public var bosToken: String { loaded.bosToken }
    public var eosToken: String { loaded.eosToken }

    /// Submits a request; throws `RequestError` at once for a request that can never run.
    public func generate(_ request: EngineRequest) throws -> AsyncStream<RequestOutput> {
        try core.validateStatic(request)
        let (stream, continuation) = AsyncStream<RequestOutput>.makeStream(bufferingPolicy: .unbounded)
        try inbox.withLock { box in
            if box.streams[request.id] != nil { throw RequestError.duplicateId(request.id) }
            if box.stats.numWaiting + box.adds.count >= maxWaiting { throw RequestError.queueFull }
            box.streams[request.id] = continuation
            box.adds.append((request, continuation))
        }
        let id = request.id
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { self?.abort(requestId: id) }
        }
        wake.signal()
        return stream
    }

    /// Aborts a request: its sequences stop and free their blocks at the next step boundary.
    public func abort(requestId: String) {
        inbox.withLock { $0.aborts.append(requestId) }
        wake.signal()
    }

    public func stats() -> EngineStats { inbox.withLock { $0.stats } }

    /// Stops the loop; unfinished requests end with finish reason abort.
    public func shutdown() {
        let already = inbox.withLock { box -> Bool in
            let was = box.stopping
            box.stopping = true
            return was
        }
        if already { return }
        wake.signal()
        done.wait()
    }

    private static func snapshot(_ core: EngineCore) -> EngineStats {
        var s = EngineStats()
        s.numRunning = core.numRunning
        s.numWaiting = core.numWaiting
        s.kvCacheUsage = core.kvCacheUsage
        s.kvBlocksTotal = core.scheduler.kv.pool.blockCount
        s.kvBlocksUsed = core.scheduler.kv.pool.usedCount
        s.kvBlockBytes = core.blockBytes
        s.prefixCacheQueries = core.scheduler.prefixQueriedTokens
        s.prefixCacheHits = core.scheduler.prefixHitTokens
        s.numPreemptions = core.scheduler.numPreemptions
        s.promptTokensTotal = core.promptTokensTotal
        s.generationTokensTotal = core.generationTokensTotal
        s.computedTokensTotal = core.runner.computedTokens
        s.steps = core.steps
        return s
    }

    private func loop() {
        while true {
            let (adds, aborts, stopping) = inbox.withLock { box in
                let r = (box.adds, box.aborts, box.stopping)
                box.adds.removeAll()
                box.aborts.removeAll()
                return r
            }
            for id in aborts {
                core.abort(id)
                if let c = inbox.withLock({ $0.streams.removeValue(forKey: id) }) { c.finish() }
            }
            for (req, continuation) in adds {
                do {
                    try core.add(req)
                } catch {
                    // Validated before; only a race with a duplicate id can land here.
                    continuation.yield(RequestOutput(requestId: req.id, index: 0, newTokenIds: [], textDelta: "", logprobs: [],
                                                     finishReason: .abort, stopReason: "\(error)", promptTokenCount: req.promptTokenIds.count,
                                                     numCachedTokens: 0, promptLogprobs: nil, metrics: nil))
                    continuation.finish()
                    inbox.withLock { _ = $0.streams.removeValue(forKey: req.id) }
                }
            }
            if stopping {
                let streams = inbox.withLock { box -> [String: AsyncStream<RequestOutput>.Continuation] in
                    let s = box.streams
                    box.streams.removeAll()
                    return s
                }
                for (id, c) in streams {
                    core.abort(id)
                    c.finish()
                }
                done.signal()
                return
            }
            if core.hasWork {
                let outputs = core.step()
                var finishedSequences: [String: Int] = [:]
                let snap = Self.snapshot(core)
                let streams = inbox.withLock { box -> [String: AsyncStream<RequestOutput>.Continuation] in
                    box.stats = snap
                    return box.streams
                }
                for o in outputs {
                    streams[o.requestId]?.yield(o)
                    if o.finishReason != nil { finishedSequences[o.requestId, default: 0] += 1 }
                }
                for (id, _) in finishedSequences where !core.isActive(id) {
                    if let c = inbox.withLock({ $0.streams.removeValue(forKey: id) }) { c.finish() }
                }
            } else {
                let snap = Self.snapshot(core)
                inbox.withLock { $0.stats = snap }
                wake.wait()
            }
        }
    }
}

extension EngineCore {
    /// Whether any sequence of the request is still waiting or running.
    public func isActive(_ id: String) -> Bool {
        scheduler.running.contains { $0.id == id } || scheduler.waiting.contains { $0.id == id }
    }

    /// The checks that do not depend on what is running (safe from any thread: reads immutable state only).
    public func validateStatic(_ r: EngineRequest) throws {
        if let (param, message) = r.params.validationError() { throw RequestError.invalid(param: param, message: message) }
        if r.promptTokenIds.isEmpty { throw RequestError.invalid(param: "prompt", message: "the prompt must contain at least one token") }
        let v = loaded.config.vocabSize
        if let bad = r.promptTokenIds.first(where: { $0 < 0 || $0 >= v }) {
            throw RequestError.invalid(param: "prompt", message: "token id \(bad) is out of range for vocabulary size \(v)")
        }
        if r.promptTokenIds.count >= maxModelLen {
            throw RequestError.tooLong(promptTokens: r.promptTokenIds.count, maxModelLen: maxModelLen)
        }
        if r.promptTokenIds.count + r.params.maxTokens > maxModelLen {
            throw RequestError.invalid(param: "max_tokens",
                message: "max_tokens is too large: \(r.params.maxTokens). This model's maximum context length is \(maxModelLen) tokens and your request has \(r.promptTokenIds.count) input tokens (\(r.params.maxTokens) > \(maxModelLen) - \(r.promptTokenIds.count)).")
        }
    }
}
