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

    /// Leading tokens computed with the wide product: the first `append` is the prompt (as the engine counts it,
    /// `LlamaModel.wideTokenCount`), so a session computes what the engine computes for the same sequence.
    private var wideTokens = 0

    /// Appends `ids` to the sequence and returns the logits after the last one. `allLogits` returns one row per id.
    public func append(_ ids: [Int], allLogits: Bool = false) -> [[Float]] {
        precondition(!ids.isEmpty && tokens.count + ids.count <= capacity, "sequence would exceed the session's capacity \(capacity)")
        let start = tokens.count
        if start == 0 { wideTokens = model.wideTokenCount(promptLength: ids.count) }
        let batch = ForwardBatch(
            tokens: ids.map(Int32.init),
            positions: (start..<start + ids.count).map(Int32.init),
            sequences: [AttentionSequence(tokenStart: 0, tokenCount: ids.count, startPosition: start,
                                          blockTable: (0..<Int32(cache.blockCount)).map { $0 })],
            logitRows: allLogits ? Array(ids.indices) : [ids.count - 1],
            wideRows: wideTokens - start)
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
        logits.withUnsafeBufferPointer { argmax($0) }
    }

    /// The id of the largest logit, the lowest id among equals (NaN never wins; 0 when no logit exceeds −∞).
    /// Sixteen lanes each keep their first maximum; the lanes' best, lowest id first, is the first maximum.
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        typealias V = SIMD16<Float>
        typealias I = SIMD16<Int32>
        guard let p = logits.baseAddress else { return 0 }
        let n = logits.count
        var best = V(repeating: -.infinity), bestId = I(repeating: 0)
        var ids = I(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        var i = 0
        if n < Int(Int32.max) {
            while i + 16 <= n {
                let v = UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
                let better = v .> best
                best.replace(with: v, where: better)
                bestId.replace(with: ids, where: better)
                ids &+= 16
                i += 16
            }
        }
        var bv = -Float.infinity, bi = 0
        for lane in 0..<16 where best[lane] > bv || (best[lane] == bv && best[lane] > -.infinity && Int(bestId[lane]) < bi) {
            bv = best[lane]
            bi = Int(bestId[lane])
        }
        while i < n {
            if p[i] > bv {
                bv = p[i]
                bi = i
            }
            i += 1
        }
        return bi
    }
}
