// TEMPORARY: stand-ins for the engine API that lands on main (Sources/Pagoda/Engine/). Delete after merging main.
import Foundation
import Pagoda

public struct EngineConfig: Sendable {
    public var maxNumBatchedTokens = 2048, maxNumSeqs = 64, maxModelLen = 2048, blockSize = 16
    public var kvCacheMemoryBytes: Int? = nil
    public var numKVBlocks: Int? = nil
    public var enablePrefixCaching = true
    public var threads: Int? = nil
    public var maxWaiting = 256
    public init() {}
}

public struct EngineRequest: Sendable {
    public var id: String
    public var promptTokenIds: [Int]
    public var params: SamplingParams
    public var priority: Int
    public init(id: String, promptTokenIds: [Int], params: SamplingParams, priority: Int = 0) {
        self.id = id; self.promptTokenIds = promptTokenIds; self.params = params; self.priority = priority
    }
}

public struct RequestOutput: Sendable {
    public let requestId: String
    public let index: Int
    public let newTokenIds: [Int]
    public let textDelta: String
    public let logprobs: [TokenLogprob]
    public let finishReason: FinishReason?
    public let stopReason: String?
    public let promptTokenCount: Int
    public let numCachedTokens: Int
    public let promptLogprobs: [TokenLogprob?]?
}

public struct EngineStats: Sendable {
    public var numRunning = 0, numWaiting = 0
    public var kvCacheUsage = 0.0
    public var prefixCacheQueries = 0, prefixCacheHits = 0, numPreemptions = 0
    public var promptTokensTotal = 0, generationTokensTotal = 0
}

public enum RequestError: Error, Sendable {
    case invalid(param: String?, message: String)
    case queueFull
    case tooLong(promptTokens: Int, maxTokens: Int, maxModelLen: Int)
}

/// Fake engine: echoes the prompt's tokens backwards, a few ms per token.
public final class AsyncEngine: Sendable {
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate?
    public let bosToken: String, eosToken: String
    public let maxModelLen: Int
    let state = Locked<(running: Int, active: Set<String>)>((0, []))

    init(tokenizer: Tokenizer, chatTemplate: ChatTemplate?, maxModelLen: Int) {
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.bosToken = tokenizer.bosTokenId.map { tokenizer.tokenString($0) } ?? ""
        self.eosToken = tokenizer.eosTokenId.map { tokenizer.tokenString($0) } ?? ""
        self.maxModelLen = maxModelLen
    }

    public static func load(modelPath: String, config: EngineConfig, progress: (String) -> Void) throws -> AsyncEngine {
        progress("loading \(modelPath)")
        let gguf = try GGUFFile(path: modelPath)
        let tok = try Tokenizer.fromGGUF(gguf)
        let tpl = try gguf["tokenizer.chat_template"]?.string.map { try ChatTemplate(source: $0) }
        return AsyncEngine(tokenizer: tok, chatTemplate: tpl, maxModelLen: config.maxModelLen)
    }

    public func generate(_ request: EngineRequest) throws -> AsyncStream<RequestOutput> {
        if let e = request.params.validationError() { throw RequestError.invalid(param: e.param, message: e.message) }
        if request.promptTokenIds.count + request.params.maxTokens > maxModelLen {
            throw RequestError.tooLong(promptTokens: request.promptTokenIds.count, maxTokens: request.params.maxTokens, maxModelLen: maxModelLen)
        }
        let (stream, cont) = AsyncStream<RequestOutput>.makeStream()
        let id = request.id
        state.withLock { $0.running += 1; _ = $0.active.insert(id) }
        let tok = tokenizer
        let task = Task {
            defer { state.withLock { $0.running -= 1; _ = $0.active.remove(id) } }
            let src = Array(request.promptTokenIds.reversed())
            var dets = (0..<request.params.n).map { _ in IncrementalDetokenizer(tokenizer: tok, skipSpecialTokens: true) }
            for step in 0..<request.params.maxTokens {
                try? await Task.sleep(for: .milliseconds(3))
                if Task.isCancelled || !state.withLock({ $0.active.contains(id) }) {
                    for i in 0..<request.params.n {
                        cont.yield(RequestOutput(requestId: id, index: i, newTokenIds: [], textDelta: "", logprobs: [], finishReason: .abort, stopReason: nil, promptTokenCount: src.count, numCachedTokens: 0, promptLogprobs: nil))
                    }
                    cont.finish(); return
                }
                for i in 0..<request.params.n {
                    let t = src.isEmpty ? 42 : src[(step + i) % src.count]
                    let last = step == request.params.maxTokens - 1
                    var d = dets[i].append(t)
                    if last { d += dets[i].flush() }
                    let lp = request.params.logprobs.map { k in [TokenLogprob(token: t, logprob: -0.5, top: Array([(t, Float(-0.5)), (7, Float(-1.5))].prefix(k)))] } ?? []
                    cont.yield(RequestOutput(requestId: id, index: i, newTokenIds: [t], textDelta: d, logprobs: lp, finishReason: last ? .length : nil, stopReason: nil, promptTokenCount: src.count, numCachedTokens: 0, promptLogprobs: nil))
                }
            }
            cont.finish()
        }
        cont.onTermination = { _ in task.cancel() }
        return stream
    }

    public func abort(requestId: String) { state.withLock { _ = $0.active.remove(requestId) } }
    public func stats() -> EngineStats {
        var s = EngineStats(); s.numRunning = state.withLock { $0.running }; s.kvCacheUsage = Double(s.numRunning) / 100; return s
    }
    public func shutdown() {}
}

