/// Limits the scheduler works within.
public struct SchedulerConfig: Sendable {
    /// Tokens per step across all sequences (the token budget).
    public var maxNumBatchedTokens = 2048
    /// Sequences running at once.
    public var maxNumSeqs = 64
    public var maxModelLen = 2048
    public var blockSize = 16
    public var enablePrefixCaching = true

    public init() {}
}

/// One sequence's share of a step: compute `numNewTokens` tokens after its `numComputedTokens`.
public struct ScheduledSequence {
    public let request: Request
    public let numNewTokens: Int
}

/// What one step runs.
public struct SchedulerOutput {
    public var scheduled: [ScheduledSequence] = []
    /// Block copies to make before the step (copy-on-write).
    public var copies: [(src: Int, dst: Int)] = []
    public var preempted: [Request] = []
    public var totalTokens: Int { scheduled.reduce(0) { $0 + $1.numNewTokens } }
}

/// Decides, every step, which sequences run and how many tokens each computes, within the token budget
/// and the KV pool: running sequences first (decodes and continuing prefills), then waiting ones by
/// priority and arrival, with chunked prefill; preempts (by recomputation) when blocks run out.
public final class Scheduler {
    public let config: SchedulerConfig
    public internal(set) var kv: KVCacheManager
    public private(set) var waiting: [Request] = []
    public private(set) var running: [Request] = []
    public private(set) var numPreemptions = 0
    public private(set) var prefixQueriedTokens = 0
    public private(set) var prefixHitTokens = 0

    public init(config: SchedulerConfig, blockCount: Int) {
        self.config = config
        kv = KVCacheManager(blockCount: blockCount, blockSize: config.blockSize, enablePrefixCaching: config.enablePrefixCaching)
    }

    public var hasWork: Bool { !waiting.isEmpty || !running.isEmpty }

    /// Lower sorts first: higher priority (smaller value), then earlier arrival.
    static func before(_ a: Request, _ b: Request) -> Bool {
        (a.priority, a.arrival) < (b.priority, b.arrival)
    }

    func enqueue(_ r: Request) {
        r.status = .waiting
        let i = waiting.firstIndex { Self.before(r, $0) } ?? waiting.count
        waiting.insert(r, at: i)
    }

    public func add(_ r: Request) { enqueue(r) }

    public func addRunning(_ r: Request) { running.append(r) }

    private func preempt(_ r: Request) {
        kv.free(r.key)
        r.numComputedTokens = 0
        r.numPreemptions += 1
        numPreemptions += 1
        running.removeAll { $0 === r }
        enqueue(r)
    }

    public func schedule() -> SchedulerOutput {
        var out = SchedulerOutput()
        var budget = config.maxNumBatchedTokens
        var scheduledSet = Set<ObjectIdentifier>()
        var i = 0
        while i < running.count && budget > 0 {
            let r = running[i]
            let num = min(r.numTokens - r.numComputedTokens, budget)
            if num <= 0 { i += 1; continue }
            var placed = false
            while true {
                if let copies = kv.allocateSlots(r, newTokens: num) {
                    out.copies += copies
                    out.scheduled.append(ScheduledSequence(request: r, numNewTokens: num))
                    scheduledSet.insert(ObjectIdentifier(r))
                    budget -= num
                    placed = true
                    break
                }
                // Out of blocks: preempt the lowest-priority, latest sequence not yet scheduled this step.
                let candidates = running.filter { !scheduledSet.contains(ObjectIdentifier($0)) }
                guard let victim = candidates.max(by: { Self.before($0, $1) }) else { break }
                preempt(victim)
                out.preempted.append(victim)
                if victim === r { break }
            }
            if placed { i += 1 }
        }
        guard out.preempted.isEmpty else { return out }
        while let r = waiting.first, budget > 0, running.count < config.maxNumSeqs {
            // Prompt log-probabilities need every prompt position computed, so such requests skip the cache.
            let cached = r.numComputedTokens == 0 && r.params.promptLogprobs == nil ? kv.cachedPrefix(r) : []
            let computed = r.numComputedTokens + cached.count * config.blockSize
            let num = min(r.numTokens - computed, budget)
            let saved = r.numComputedTokens
            r.numComputedTokens = computed
            guard let copies = kv.allocateSlots(r, newTokens: num, cachedBlocks: cached) else {
                r.numComputedTokens = saved
                break
            }
            if r.numPreemptions == 0 && r.firstScheduledTime == nil {
                r.numCachedTokens = cached.count * config.blockSize
            }
            prefixQueriedTokens += r.numTokens
            prefixHitTokens += cached.count * config.blockSize
            waiting.removeFirst()
            r.status = .running
            running.append(r)
            out.copies += copies
            out.scheduled.append(ScheduledSequence(request: r, numNewTokens: num))
            budget -= num
        }
        return out
    }

    /// Removes a finished or aborted sequence and frees its blocks at once.
    public func finish(_ r: Request, reason: FinishReason) {
        r.status = .finished(reason)
        kv.free(r.key)
        running.removeAll { $0 === r }
        waiting.removeAll { $0 === r }
    }

    /// Blocks needed to hold `tokens` tokens.
    public func blocksNeeded(tokens: Int) -> Int { (tokens + config.blockSize - 1) / config.blockSize }
}
