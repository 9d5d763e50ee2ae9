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
            let ls = UnsafeMutablePointer<Float>.allocate(capacity: headsPerItem)
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
                ls.initialize(repeating: 0, count: headsPerItem)
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
                        var blockMax = -Float.infinity
                        if vectorBlocks {
                            // 16 slots at a time; lanes past n are masked out (their scores are garbage).
                            var j = 0
                            while j < n {
                                var sv = UnsafeRawPointer(sc + j).loadUnaligned(as: SIMD16<Float>.self)
                                sv.replace(with: -.infinity, where: laneIndex .>= SIMD16<Int32>(repeating: Int32(n - j)))
                                blockMax = max(blockMax, horizontalMax(sv))
                                j += 16
                            }
                        } else {
                            for j in 0..<n { blockMax = max(blockMax, sc[j]) }
                        }
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

/// scores[gh·blockSize + j] for the `heads` query heads at `q` (consecutive, headDim apart) against the
/// first `n` keys of one block of transposed keys ([dim][slot], `blockSize` slots), in exactly the order of a
/// row-major 16-lane dot product: lane i accumulates fma(q[16c + i], k[16c + i]) over chunks c, the lanes are
/// summed in order (from −0), then the scalar tail Σ q[d]·k[d] (d past the last full chunk) is added and the
/// result scaled. With transposed keys, 16 keys are computed per vector and no horizontal sum is needed.
@inline(never)
func attentionScores(q: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<Float>, blockSize: Int, n: Int,
                     headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>) {
    typealias V = SIMD16<Float>
    let full = headDim / 16 * 16
    if blockSize % 16 == 0 {
        var j0 = 0
        while j0 < n {
            let k = keys + j0
            for gh in 0..<heads {
                let qh = q + gh * headDim
                var r = V(repeating: -0.0)
                for i in 0..<16 {
                    var p = V()
                    var d = i
                    while d < full {
                        p.addProduct(V(repeating: qh[d]), UnsafeRawPointer(k + d * blockSize).loadUnaligned(as: V.self))
                        d += 16
                    }
                    r += p
                }
                var tail = V()
                for d in full..<headDim {
                    tail += V(repeating: qh[d]) * UnsafeRawPointer(k + d * blockSize).loadUnaligned(as: V.self)
                }
                let sc = (r + tail) * V(repeating: scale)
                UnsafeMutableRawPointer(scores + gh * blockSize + j0).storeBytes(of: sc, as: V.self)
            }
            j0 += 16
        }
    } else {
        for j in 0..<n {
            for gh in 0..<heads {
                let qh = q + gh * headDim
                var r: Float = -0.0
                for i in 0..<16 {
                    var p: Float = 0
                    var d = i
                    while d < full {
                        p = p.addingProduct(qh[d], keys[d * blockSize + j])
                        d += 16
                    }
                    r += p
                }
                var tail: Float = 0
                for d in full..<headDim { tail += qh[d] * keys[d * blockSize + j] }
                scores[gh * blockSize + j] = (r + tail) * scale
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
