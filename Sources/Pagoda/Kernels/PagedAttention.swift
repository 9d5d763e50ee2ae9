import Foundation

/// Where one sequence of a flattened batch lives: its new tokens and its KV blocks.
public struct AttentionSequence: Sendable {
    /// Index of the sequence's first new token in the flattened batch.
    public var tokenStart: Int
    /// Number of new tokens of this sequence in the batch.
    public var tokenCount: Int
    /// Position of the first new token (tokens before it are already in the cache).
    public var startPosition: Int
    /// Physical block ids of the sequence, in order; must cover startPosition + tokenCount positions.
    public var blockTable: [Int32]

    public init(tokenStart: Int, tokenCount: Int, startPosition: Int, blockTable: [Int32]) {
        self.tokenStart = tokenStart
        self.tokenCount = tokenCount
        self.startPosition = startPosition
        self.blockTable = blockTable
    }
}

/// The K and V storage of one layer: `blockCount` blocks of `blockSize` slots, each slot holding
/// `kvHeads × headDim` keys (and as many values). Slot s of block b is row b·blockSize + s.
public struct LayerKV: @unchecked Sendable {
    public let keys: UnsafeMutablePointer<Float>
    public let values: UnsafeMutablePointer<Float>
}

/// Causal attention of each new token over its own sequence's cached keys and values (flash-style: online
/// softmax, one block at a time; the score matrix is never materialized). Work is split over
/// (token, head) pairs; each pair is computed the same way whatever else is in the batch.
///
/// q: [tokens, heads·headDim]; out: [tokens, heads·headDim].
public func pagedAttention(q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, kv: LayerKV,
                           sequences: [AttentionSequence], heads: Int, kvHeads: Int, headDim: Int,
                           blockSize: Int, pool: ThreadPool) {
    var items: [(seq: Int, token: Int)] = []
    for (si, s) in sequences.enumerated() {
        for t in 0..<s.tokenCount { items.append((si, t)) }
    }
    let total = items.count * heads
    let group = heads / kvHeads
    let rowStride = kvHeads * headDim
    let scale = 1 / Float(headDim).squareRoot()
    items.withUnsafeBufferPointer { itemsPtr in
        sequences.withUnsafeBufferPointer { seqPtr in
            pool.parallelFor(total) { range in
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: blockSize)
                let acc = UnsafeMutablePointer<Float>.allocate(capacity: headDim)
                defer { scores.deallocate(); acc.deallocate() }
                for work in range {
                    let item = itemsPtr[work / heads]
                    let h = work % heads
                    let seq = seqPtr[item.seq]
                    let tokenIndex = seq.tokenStart + item.token
                    let context = seq.startPosition + item.token + 1
                    let qh = q + tokenIndex * heads * headDim + h * headDim
                    let kvh = h / group
                    acc.initialize(repeating: 0, count: headDim)
                    var m = -Float.infinity
                    var l: Float = 0
                    var pos = 0
                    seq.blockTable.withUnsafeBufferPointer { table in
                        while pos < context {
                            let block = Int(table[pos / blockSize])
                            let n = min(blockSize, context - pos)
                            let base = block * blockSize * rowStride + kvh * headDim
                            var blockMax = -Float.infinity
                            for j in 0..<n {
                                let k = kv.keys + base + j * rowStride
                                var s = SIMD16<Float>()
                                var d = 0
                                while d + 16 <= headDim {
                                    s.addProduct(UnsafeRawPointer(qh + d).loadUnaligned(as: SIMD16<Float>.self),
                                                 UnsafeRawPointer(k + d).loadUnaligned(as: SIMD16<Float>.self))
                                    d += 16
                                }
                                var tail: Float = 0
                                while d < headDim { tail += qh[d] * k[d]; d += 1 }
                                let score = (s.sum() + tail) * scale
                                scores[j] = score
                                blockMax = max(blockMax, score)
                            }
                            let newMax = max(m, blockMax)
                            let correction = m == -Float.infinity ? 0 : exp(m - newMax)
                            l *= correction
                            for d in 0..<headDim { acc[d] *= correction }
                            for j in 0..<n {
                                let p = exp(scores[j] - newMax)
                                l += p
                                let v = kv.values + base + j * rowStride
                                for d in 0..<headDim { acc[d] = acc[d].addingProduct(p, v[d]) }
                            }
                            m = newMax
                            pos += n
                        }
                    }
                    let o = out + tokenIndex * heads * headDim + h * headDim
                    let inv = 1 / l
                    for d in 0..<headDim { o[d] = acc[d] * inv }
                }
            }
        }
    }
}
