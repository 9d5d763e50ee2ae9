import Foundation

/// One sequence run step by step over its own blocks of a KV cache: the simplest client of the model,
/// used by `pagoda generate` and the golden tests. The batched engine schedules many of these at once.
public final class GenerationSession {
    public let model: LlamaModel
    public let pool: ThreadPool
    let cache: KVCacheStorage
    public private(set) var tokens: [Int] = []

    /// A session able to hold `maxTokens` tokens.
    public init(model: LlamaModel, maxTokens: Int, blockSize: Int = 16, pool: ThreadPool) {
        self.model = model
        self.pool = pool
        let blocks = max(1, (maxTokens + blockSize - 1) / blockSize)
        cache = KVCacheStorage(config: model.config, blockCount: blocks, blockSize: blockSize, dtype: .automatic(for: model, blockSize: blockSize))
    }

    public var capacity: Int { cache.blockCount * cache.blockSize }

    /// Appends `ids` to the sequence and returns the logits after the last one. `allLogits` returns one row per id.
    public func append(_ ids: [Int], allLogits: Bool = false) -> [[Float]] {
        precondition(!ids.isEmpty && tokens.count + ids.count <= capacity, "sequence would exceed the session's capacity \(capacity)")
        let start = tokens.count
        let batch = ForwardBatch(
            tokens: ids.map(Int32.init),
            positions: (start..<start + ids.count).map(Int32.init),
            sequences: [AttentionSequence(tokenStart: 0, tokenCount: ids.count, startPosition: start,
                                          blockTable: (0..<Int32(cache.blockCount)).map { $0 })],
            logitRows: allLogits ? Array(ids.indices) : [ids.count - 1])
        let flat = model.forward(batch, cache: cache, pool: pool)
        tokens += ids
        let v = model.config.vocabSize
        return (0..<flat.count / v).map { Array(flat[$0 * v..<($0 + 1) * v]) }
    }
}

/// Log-softmax helpers shared by samplers and reports.
public enum LogProbs {
    /// log Σ exp(logits), computed stably.
    public static func logSumExp(_ logits: [Float]) -> Float {
        let m = logits.max() ?? 0
        var s: Double = 0
        for x in logits { s += Double(expf(x - m)) }
        return m + Float(log(s))
    }

    /// The `k` best ids with their log-probabilities, best first (ties: lower id first).
    public static func top(_ logits: [Float], k: Int) -> [(id: Int, logprob: Float)] {
        let lse = logSumExp(logits)
        var best: [(Int, Float)] = []
        for (i, x) in logits.enumerated() {
            if best.count < k || x > best[best.count - 1].1 {
                var j = best.count
                if best.count == k { best.removeLast(); j -= 1 }
                while j > 0 && best[j - 1].1 < x { j -= 1 }
                best.insert((i, x), at: j)
            }
        }
        return best.map { ($0.0, $0.1 - lse) }
    }

    public static func argmax(_ logits: [Float]) -> Int {
        var bi = 0
        var bv = -Float.infinity
        for (i, x) in logits.enumerated() where x > bv {
            bv = x
            bi = i
        }
        return bi
    }
}
