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
/// softmax, one block at a time; the score matrix is never materialized). Work is split over (token, KV head)
/// pairs — the query heads sharing a KV head are computed together so each key and value row is loaded once —
/// or over (token, head) pairs when there are few tokens. Each (token, head) is computed the same way
/// whatever else is in the batch and however the work is split.
///
/// q: [tokens, heads·headDim]; out: [tokens, heads·headDim].
public func pagedAttention(q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, kv: LayerKV,
                           sequences: [AttentionSequence], heads: Int, kvHeads: Int, headDim: Int,
                           blockSize: Int, pool: ThreadPool) {
    // Flattened work description: per token (sequence, token), and all block tables back to back.
    var itemSeq: [Int32] = []
    var itemToken: [Int32] = []
    var tableStart: [Int] = []
    var tables: [Int32] = []
    for (si, s) in sequences.enumerated() {
        tableStart.append(tables.count)
        tables.append(contentsOf: s.blockTable)
        for t in 0..<s.tokenCount {
            itemSeq.append(Int32(si))
            itemToken.append(Int32(t))
        }
    }
    let tokens = itemSeq.count
    if tokens == 0 { return }
    let group = heads / kvHeads
    // Few tokens (decode): one work item per query head, so both threads get work.
    let perHead = tokens * kvHeads < 4 * pool.threadCount
    let headsPerItem = perHead ? 1 : group
    let itemsPerToken = heads / headsPerItem
    let total = tokens * itemsPerToken
    let rowStride = kvHeads * headDim
    let scale = 1 / Float(headDim).squareRoot()
    itemSeq.withUnsafeBufferPointer { itemSeq in
    itemToken.withUnsafeBufferPointer { itemToken in
    tableStart.withUnsafeBufferPointer { tableStart in
    tables.withUnsafeBufferPointer { tables in
    sequences.withUnsafeBufferPointer { seqPtr in
        pool.parallelFor(total) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: blockSize * headsPerItem)
            let acc = UnsafeMutablePointer<Float>.allocate(capacity: headDim * headsPerItem)
            let ms = UnsafeMutablePointer<Float>.allocate(capacity: headsPerItem)
            let ls = UnsafeMutablePointer<Float>.allocate(capacity: headsPerItem)
            defer { scores.deallocate(); acc.deallocate(); ms.deallocate(); ls.deallocate() }
            for work in range {
                let ti = work / itemsPerToken
                let h0 = (work % itemsPerToken) * headsPerItem
                let si = Int(itemSeq[ti])
                let startPosition = seqPtr[si].startPosition
                let tokenStart = seqPtr[si].tokenStart
                let table = tables.baseAddress! + tableStart[si]
                let tokenIndex = tokenStart + Int(itemToken[ti])
                let context = startPosition + Int(itemToken[ti]) + 1
                let qBase = q + tokenIndex * heads * headDim
                let kvh = h0 / group
                acc.initialize(repeating: 0, count: headDim * headsPerItem)
                ms.initialize(repeating: -Float.infinity, count: headsPerItem)
                ls.initialize(repeating: 0, count: headsPerItem)
                var pos = 0
                while pos < context {
                    let block = Int(table[pos / blockSize])
                    let n = min(blockSize, context - pos)
                    let base = block * blockSize * rowStride + kvh * headDim
                    attentionScores(q: qBase + h0 * headDim, heads: headsPerItem, keys: kv.keys + base,
                                    rowStride: rowStride, n: n, headDim: headDim, scale: scale, scores: scores,
                                    scoreStride: blockSize)
                    for gh in 0..<headsPerItem {
                        let sc = scores + gh * blockSize
                        var blockMax = -Float.infinity
                        for j in 0..<n { blockMax = max(blockMax, sc[j]) }
                        let m = ms[gh]
                        let newMax = max(m, blockMax)
                        let correction = m == -Float.infinity ? 0 : exp(m - newMax)
                        var l = ls[gh] * correction
                        // Probabilities in place of the scores, summed in key order.
                        for j in 0..<n {
                            let p = exp(sc[j] - newMax)
                            l += p
                            sc[j] = p
                        }
                        ls[gh] = l
                        ms[gh] = newMax
                        accumulateValues(acc: acc + gh * headDim, correction: correction, probs: sc,
                                         values: kv.values + base, rowStride: rowStride, n: n, headDim: headDim)
                    }
                    pos += n
                }
                for gh in 0..<headsPerItem {
                    let o = out + tokenIndex * heads * headDim + (h0 + gh) * headDim
                    let a = acc + gh * headDim
                    let inv = 1 / ls[gh]
                    for d in 0..<headDim { o[d] = a[d] * inv }
                }
            }
        }
    }
    }
    }
    }
    }
}

/// scores[gh·scoreStride + j] for the `heads` query heads at `q` (consecutive, headDim apart) against `n` key
/// rows `rowStride` apart: (Σ of 16-wide fma chunks, horizontally summed, + scalar tail) · scale.
@inline(never)
func attentionScores(q: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<Float>, rowStride: Int, n: Int,
                     headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>, scoreStride: Int) {
    for j in 0..<n {
        let k = keys + j * rowStride
        for gh in 0..<heads {
            let qh = q + gh * headDim
            var s = SIMD16<Float>()
            var d = 0
            while d + 16 <= headDim {
                s.addProduct(UnsafeRawPointer(qh + d).loadUnaligned(as: SIMD16<Float>.self),
                             UnsafeRawPointer(k + d).loadUnaligned(as: SIMD16<Float>.self))
                d += 16
            }
            var tail: Float = 0
            while d < headDim { tail += qh[d] * k[d]; d += 1 }
            scores[gh * scoreStride + j] = (s.sum() + tail) * scale
        }
    }
}

/// acc = acc · correction, then acc[d] = fma(probs[j], v_j[d], acc[d]) for j in key order, 16 lanes at a time
/// (each element sees exactly the scalar sequence of operations).
@inline(never)
func accumulateValues(acc: UnsafeMutablePointer<Float>, correction: Float, probs: UnsafePointer<Float>,
                      values: UnsafePointer<Float>, rowStride: Int, n: Int, headDim: Int) {
    typealias V = SIMD16<Float>
    var d = 0
    // 64 columns at a time in registers.
    while d + 64 <= headDim {
        let cv = V(repeating: correction)
        var a0 = UnsafeRawPointer(acc + d).loadUnaligned(as: V.self) * cv
        var a1 = UnsafeRawPointer(acc + d + 16).loadUnaligned(as: V.self) * cv
        var a2 = UnsafeRawPointer(acc + d + 32).loadUnaligned(as: V.self) * cv
        var a3 = UnsafeRawPointer(acc + d + 48).loadUnaligned(as: V.self) * cv
        for j in 0..<n {
            let p = V(repeating: probs[j])
            let v = values + j * rowStride + d
            a0.addProduct(p, UnsafeRawPointer(v).loadUnaligned(as: V.self))
            a1.addProduct(p, UnsafeRawPointer(v + 16).loadUnaligned(as: V.self))
            a2.addProduct(p, UnsafeRawPointer(v + 32).loadUnaligned(as: V.self))
            a3.addProduct(p, UnsafeRawPointer(v + 48).loadUnaligned(as: V.self))
        }
        UnsafeMutableRawPointer(acc + d).storeBytes(of: a0, as: V.self)
        UnsafeMutableRawPointer(acc + d + 16).storeBytes(of: a1, as: V.self)
        UnsafeMutableRawPointer(acc + d + 32).storeBytes(of: a2, as: V.self)
        UnsafeMutableRawPointer(acc + d + 48).storeBytes(of: a3, as: V.self)
        d += 64
    }
    while d + 16 <= headDim {
        var a = UnsafeRawPointer(acc + d).loadUnaligned(as: V.self) * V(repeating: correction)
        for j in 0..<n {
            a.addProduct(V(repeating: probs[j]), UnsafeRawPointer(values + j * rowStride + d).loadUnaligned(as: V.self))
        }
        UnsafeMutableRawPointer(acc + d).storeBytes(of: a, as: V.self)
        d += 16
    }
    while d < headDim {
        var a = acc[d] * correction
        for j in 0..<n { a = a.addingProduct(probs[j], values[j * rowStride + d]) }
        acc[d] = a
        d += 1
    }
}
