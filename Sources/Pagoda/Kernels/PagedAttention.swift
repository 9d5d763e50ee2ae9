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

/// The K and V storage of one layer: `blockCount` blocks of `blockSize` slots. Values: slot s of block b is
/// row b·blockSize + s of `kvHeads × headDim` values. Keys are stored transposed within each block —
/// [block][kvHead][dim][slot] — so one vector load reads a dimension of 16 consecutive keys (see `keyIndex`).
/// A block occupies the same range of both buffers, so blocks can be copied whole.
public struct LayerKV: @unchecked Sendable {
    public let keys: UnsafeMutablePointer<Float>
    public let values: UnsafeMutablePointer<Float>

    public init(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>) {
        self.keys = keys
        self.values = values
    }

    /// Index in `keys` of dimension `d` of KV head `h` for cache row `row` (= block·blockSize + slot).
    @inline(__always) public static func keyIndex(row: Int, head h: Int, dim d: Int, kvHeads: Int, headDim: Int,
                                                  blockSize: Int) -> Int {
        let block = row / blockSize, slot = row % blockSize
        return block * blockSize * kvHeads * headDim + (h * headDim + d) * blockSize + slot
    }

    /// Stores the keys and values `[kvHeads × headDim]` of one token at cache row `row`.
    @inline(__always) public func store(row: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>,
                                        kvHeads: Int, headDim: Int, blockSize: Int) {
        let kvDim = kvHeads * headDim
        (values + row * kvDim).update(from: v, count: kvDim)
        let block = row / blockSize, slot = row % blockSize
        let base = keys + block * blockSize * kvDim + slot
        for i in 0..<kvDim { base[i * blockSize] = k[i] }
    }
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
        // Later tokens attend to more keys: chunks are claimed from the end of the batch first, a few per
        // thread, so the threads finish together.
        let chunks = pool.threadCount == 1 ? 1 : min(total, pool.threadCount * 8)
        pool.forEachChunk(chunks) { c in
            let range = (total - total * (c + 1) / chunks)..<(total - total * c / chunks)
            if range.isEmpty { return }
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: blockSize * headsPerItem)
            let acc = UnsafeMutablePointer<Float>.allocate(capacity: headDim * headsPerItem)
            let ms = UnsafeMutablePointer<Float>.allocate(capacity: headsPerItem)
            // Softmax denominators: 16 lanes per head; slot j of every block adds to lane j % 16.
            let ls = UnsafeMutablePointer<SIMD16<Float>>.allocate(capacity: headsPerItem)
            defer { scores.deallocate(); acc.deallocate(); ms.deallocate(); ls.deallocate() }
            let vectorBlocks = blockSize % 16 == 0
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
                ls.initialize(repeating: SIMD16<Float>(), count: headsPerItem)
                var pos = 0
                while pos < context {
                    let block = Int(table[pos / blockSize])
                    let n = min(blockSize, context - pos)
                    let base = block * blockSize * rowStride + kvh * headDim
                    attentionScores(q: qBase + h0 * headDim, heads: headsPerItem,
                                    keys: kv.keys + block * blockSize * rowStride + kvh * headDim * blockSize,
                                    blockSize: blockSize, n: n, headDim: headDim, scale: scale, scores: scores)
                    for gh in 0..<headsPerItem {
                        let sc = scores + gh * blockSize
                        let m = ms[gh]
                        if vectorBlocks {
                            // 16 slots at a time; lanes past n are masked out (their scores are garbage).
                            var blockMax = -Float.infinity
                            var j = 0
                            while j < n {
                                var sv = UnsafeRawPointer(sc + j).loadUnaligned(as: SIMD16<Float>.self)
                                sv.replace(with: -.infinity, where: laneIndex .>= SIMD16<Int32>(repeating: Int32(n - j)))
                                blockMax = max(blockMax, horizontalMax(sv))
                                j += 16
                            }
                            let newMax = max(m, blockMax)
                            let correction = m == -Float.infinity ? 0 : expScalar(m - newMax)
                            var l = ls[gh] * SIMD16<Float>(repeating: correction)
                            let mv = SIMD16<Float>(repeating: newMax)
                            j = 0
                            while j < n {
                                var p = expSIMD(UnsafeRawPointer(sc + j).loadUnaligned(as: SIMD16<Float>.self) - mv)
                                p.replace(with: 0, where: laneIndex .>= SIMD16<Int32>(repeating: Int32(n - j)))
                                UnsafeMutableRawPointer(sc + j).storeBytes(of: p, as: SIMD16<Float>.self)
                                l += p
                                j += 16
                            }
                            ls[gh] = l
                            ms[gh] = newMax
                            accumulateValues(acc: acc + gh * headDim, correction: correction, probs: sc,
                                             values: kv.values + base, rowStride: rowStride, n: n, headDim: headDim)
                        } else {
                            var blockMax = -Float.infinity
                            for j in 0..<n { blockMax = max(blockMax, sc[j]) }
                            let newMax = max(m, blockMax)
                            let correction = m == -Float.infinity ? 0 : expScalar(m - newMax)
                            var l = ls[gh] * SIMD16<Float>(repeating: correction)
                            for j in 0..<n {
                                let p = expScalar(sc[j] - newMax)
                                sc[j] = p
                                l[j % 16] += p
                            }
                            ls[gh] = l
                            ms[gh] = newMax
                            accumulateValues(acc: acc + gh * headDim, correction: correction, probs: sc,
                                             values: kv.values + base, rowStride: rowStride, n: n, headDim: headDim)
                        }
                    }
                    pos += n
                }
                for gh in 0..<headsPerItem {
                    let o = out + tokenIndex * heads * headDim + (h0 + gh) * headDim
                    let a = acc + gh * headDim
                    let l = ls[gh]
                    let l8 = l.lowHalf + l.highHalf
                    let l4 = l8.lowHalf + l8.highHalf
                    let l2 = l4.lowHalf + l4.highHalf
                    let inv = 1 / (l2[0] + l2[1])
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

/// scores[gh·blockSize + j] for the `heads` query heads at `q` (consecutive, headDim apart) against the
/// first `n` keys of one block of transposed keys ([dim][slot], `blockSize` slots). Each score is
/// ((S0 + S1) + (S2 + S3))·scale with S_r = Σ over d ≡ r (mod 4), in order, of fma(q[d], k[d], S_r): 16 keys
/// per vector when blockSize is a multiple of 16, the same operations one key at a time otherwise.
@inline(never)
func attentionScores(q: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<Float>, blockSize: Int, n: Int,
                     headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>) {
    typealias V = SIMD16<Float>
    if blockSize % 16 == 0 {
        var j0 = 0
        while j0 < n {
            let k = keys + j0
            for gh in 0..<heads {
                let qh = q + gh * headDim
                var s0 = V(), s1 = V(), s2 = V(), s3 = V()
                var d = 0
                while d + 4 <= headDim {
                    s0.addProduct(V(repeating: qh[d]), UnsafeRawPointer(k + d * blockSize).loadUnaligned(as: V.self))
                    s1.addProduct(V(repeating: qh[d + 1]), UnsafeRawPointer(k + (d + 1) * blockSize).loadUnaligned(as: V.self))
                    s2.addProduct(V(repeating: qh[d + 2]), UnsafeRawPointer(k + (d + 2) * blockSize).loadUnaligned(as: V.self))
                    s3.addProduct(V(repeating: qh[d + 3]), UnsafeRawPointer(k + (d + 3) * blockSize).loadUnaligned(as: V.self))
                    d += 4
                }
                if d < headDim { s0.addProduct(V(repeating: qh[d]), UnsafeRawPointer(k + d * blockSize).loadUnaligned(as: V.self)) }
                if d + 1 < headDim { s1.addProduct(V(repeating: qh[d + 1]), UnsafeRawPointer(k + (d + 1) * blockSize).loadUnaligned(as: V.self)) }
                if d + 2 < headDim { s2.addProduct(V(repeating: qh[d + 2]), UnsafeRawPointer(k + (d + 2) * blockSize).loadUnaligned(as: V.self)) }
                let sc = ((s0 + s1) + (s2 + s3)) * V(repeating: scale)
                UnsafeMutableRawPointer(scores + gh * blockSize + j0).storeBytes(of: sc, as: V.self)
            }
            j0 += 16
        }
    } else {
        for j in 0..<n {
            for gh in 0..<heads {
                let qh = q + gh * headDim
                var s: (Float, Float, Float, Float) = (0, 0, 0, 0)
                for d in 0..<headDim {
                    let p = keys[d * blockSize + j]
                    switch d & 3 {
                    case 0: s.0 = s.0.addingProduct(qh[d], p)
                    case 1: s.1 = s.1.addingProduct(qh[d], p)
                    case 2: s.2 = s.2.addingProduct(qh[d], p)
                    default: s.3 = s.3.addingProduct(qh[d], p)
                    }
                }
                scores[gh * blockSize + j] = ((s.0 + s.1) + (s.2 + s.3)) * scale
            }
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

/// 0, 1, …, 15.
private let laneIndex = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

/// The largest lane (lanes are finite or −∞), by a tree of vector maxima.
@inline(__always) private func horizontalMax(_ v: SIMD16<Float>) -> Float {
    var a = v.lowHalf
    let b = v.highHalf
    a.replace(with: b, where: b .> a)
    var c = a.lowHalf
    let d = a.highHalf
    c.replace(with: d, where: d .> c)
    var e = c.lowHalf
    let f = c.highHalf
    e.replace(with: f, where: f .> e)
    return max(e[0], e[1])
}
