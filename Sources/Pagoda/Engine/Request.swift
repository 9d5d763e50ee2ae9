/// The state of one sequence inside the engine. Owned by the engine thread; never shared.
public final class Request {
    public enum Status: Equatable {
        case waiting
        case running
        case finished(FinishReason)
    }

    /// The id given by the caller; children of an n > 1 request share it and differ by `index`.
    public let id: String
    public let index: Int
    public let promptTokenIds: [Int]
    public private(set) var outputTokenIds: [Int] = []
    public private(set) var allTokenIds: [Int]
    public let params: SamplingParams
    public let priority: Int
    /// Arrival order, for first-come-first-served among equal priorities.
    public let arrival: Int
    public var status: Status = .waiting
    /// Tokens whose keys and values are in the cache.
    public var numComputedTokens = 0
    /// Prompt tokens found in the prefix cache when first scheduled.
    public var numCachedTokens = 0
    public var numPreemptions = 0
    public var rng: Xoshiro256
    public var outputLogprobs: [TokenLogprob] = []
    public var promptLogprobs: [TokenLogprob?] = []
    /// Set when an n > 1 parent has produced its children.
    public var hasForked = false
    /// Content hashes of this request's full blocks, computed as they fill.
    public var blockHashes: [BlockHash] = []
    /// Leading tokens (the prompt's, or none) that the model computes with the wide product
    /// (`LlamaModel.wideTokenCount`); part of each block's prefix-cache key, since it changes the cached values.
    public var wideTokenCount = 0
    public var detokenizer: IncrementalDetokenizer?
    /// Text produced so far (after stop-string handling), and how much of it was sent.
    public var outputText = ""
    public var pendingText = ""
    public var sentTextCount = 0
    public var sentTokenCount = 0
    public var sentLogprobCount = 0
    public var stopReason: String?
    public let arrivalTime: Double
    public var firstScheduledTime: Double?
    public var firstTokenTime: Double?
    public var lastTokenTime: Double?

    init(id: String, index: Int = 0, promptTokenIds: [Int], params: SamplingParams, priority: Int, arrival: Int,
         rng: Xoshiro256, arrivalTime: Double) {
        self.id = id
        self.index = index
        self.promptTokenIds = promptTokenIds
        self.allTokenIds = promptTokenIds
        self.params = params
        self.priority = priority
        self.arrival = arrival
        self.rng = rng
        self.arrivalTime = arrivalTime
    }

    public var numTokens: Int { allTokenIds.count }
    public var isFinished: Bool { if case .finished = status { return true } else { return false } }
    public var finishReason: FinishReason? { if case .finished(let r) = status { return r } else { return nil } }

    func appendOutput(_ token: Int) {
        outputTokenIds.append(token)
        allTokenIds.append(token)
    }

    /// A copy of this sequence's state for sibling `index` of an n > 1 request (blocks are forked separately).
    func fork(index: Int, rng: Xoshiro256, arrival: Int) -> Request {
        let r = Request(id: id, index: index, promptTokenIds: promptTokenIds, params: params, priority: priority,
                        arrival: arrival, rng: rng, arrivalTime: arrivalTime)
        r.numComputedTokens = numComputedTokens
        r.numCachedTokens = numCachedTokens
        r.status = status
        r.blockHashes = blockHashes
        r.wideTokenCount = wideTokenCount
        r.promptLogprobs = promptLogprobs
        r.hasForked = true
        r.firstScheduledTime = firstScheduledTime
        return r
    }
}

/// The key of a sequence in the engine: request id and sibling index.
public struct SequenceKey: Hashable, Sendable {
    public let id: String
    public let index: Int
}

extension Request {
    var key: SequenceKey { SequenceKey(id: id, index: index) }
}
