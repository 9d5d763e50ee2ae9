import Foundation
import PagodaKernelsC
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

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

/// The K and V storage of one layer: `blockCount` blocks of `blockSize` slots, elements of `dtype`, each block
/// grouped by KV head so that one head's keys or values of a block are one contiguous run. Keys are stored
/// transposed — [block][kvHead][dim][slot] — so one vector load reads a dimension of 16 consecutive keys (see
/// `keyIndex`); values are [block][kvHead][slot][dim] (see `valueIndex`). A block occupies the same range of both
/// buffers, so blocks can be copied whole.
///
/// The u8 cache keeps that order for its codes and follows each head's codes in a block with fp16 parameters:
/// keys [dim][slot] codes, then scale[group][slot] and min[group][slot] for groups of 16 dimensions; values
/// [slot][dim] codes, then scale[slot] and min[slot] (see `KVCacheDType.runBytes`). An element is
/// min + scale·code.
public struct LayerKV: @unchecked Sendable {
    public let keys: UnsafeMutableRawPointer
    public let values: UnsafeMutableRawPointer
    public let dtype: KVCacheDType

    public init(keys: UnsafeMutableRawPointer, values: UnsafeMutableRawPointer, dtype: KVCacheDType) {
        self.keys = keys
        self.values = values
        self.dtype = dtype
    }

    /// fp32 storage.
    public init(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>) {
        self.init(keys: UnsafeMutableRawPointer(keys), values: UnsafeMutableRawPointer(values), dtype: .f32)
    }

    /// Index (in elements) in `keys` of dimension `d` of KV head `h` for cache row `row` (= block·blockSize + slot).
    @inline(__always) public static func keyIndex(row: Int, head h: Int, dim d: Int, kvHeads: Int, headDim: Int,
                                                  blockSize: Int) -> Int {
        let block = row / blockSize, slot = row % blockSize
        return block * blockSize * kvHeads * headDim + (h * headDim + d) * blockSize + slot
    }

    /// Index (in elements) in `values` of dimension `d` of KV head `h` for cache row `row`.
    @inline(__always) public static func valueIndex(row: Int, head h: Int, dim d: Int, kvHeads: Int, headDim: Int,
                                                    blockSize: Int) -> Int {
        let block = row / blockSize, slot = row % blockSize
        return block * blockSize * kvHeads * headDim + (h * blockSize + slot) * headDim + d
    }

    /// Stores the keys and values `[kvHeads × headDim]` of one token at cache row `row` (rounded to `dtype`).
    @inline(__always) public func store(row: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>,
                                        kvHeads: Int, headDim: Int, blockSize: Int) {
        switch dtype {
        case .f32: store(Float.self, row: row, keys: k, values: v, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
        case .f16: store(Float16.self, row: row, keys: k, values: v, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
        case .u8: storeU8(row: row, keys: k, values: v, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
        }
    }

    private func storeU8(row: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, kvHeads: Int,
                         headDim: Int, blockSize bs: Int) {
        let block = row / bs
        let keyRun = dtype.runBytes(blockSize: bs, headDim: headDim, keys: true)
        let valueRun = dtype.runBytes(blockSize: bs, headDim: headDim, keys: false)
        pagoda_kv_store_u8(keys.assumingMemoryBound(to: UInt8.self) + block * kvHeads * keyRun,
                           values.assumingMemoryBound(to: UInt8.self) + block * kvHeads * valueRun,
                           Int64(row % bs), Int64(bs), Int64(headDim), Int64(kvHeads), k, v)
    }

    /// Dimension `d` of KV head `h`'s key (`keys`) or value at cache row `row` as stored (for u8, min + scale·code;
    /// the kernels take the same codes, scales and minima, as scale·Σ q·code + min·Σ q per key group, see pagoda_kernels.h).
    public func element(keys isKey: Bool, row: Int, head h: Int, dim d: Int, kvHeads: Int, headDim: Int, blockSize bs: Int) -> Float {
        guard dtype == .u8 else {
            return isKey ? key(at: Self.keyIndex(row: row, head: h, dim: d, kvHeads: kvHeads, headDim: headDim, blockSize: bs))
                : value(at: Self.valueIndex(row: row, head: h, dim: d, kvHeads: kvHeads, headDim: headDim, blockSize: bs))
        }
        let block = row / bs, slot = row % bs
        let run = (block * kvHeads + h) * dtype.runBytes(blockSize: bs, headDim: headDim, keys: isKey)
        let base = isKey ? keys + run : values + run
        let code: UInt8, param: Int
        if isKey {
            // Dimensions 2p and 2p + 1 of a slot side by side.
            code = base.load(fromByteOffset: (d / 2) * 2 * bs + 2 * slot + d % 2, as: UInt8.self)
            param = 2 * ((d / 16) * bs + slot)
        } else {
            // Slots 2k and 2k + 1 of a dimension side by side.
            code = base.load(fromByteOffset: (slot / 2) * 2 * headDim + 2 * d + slot % 2, as: UInt8.self)
            param = 2 * slot
        }
        let paramBytes = 2 * bs * (isKey ? headDim / 16 : 1)
        let s = Float(base.loadUnaligned(fromByteOffset: bs * headDim + param, as: Float16.self))
        let z = Float(base.loadUnaligned(fromByteOffset: bs * headDim + paramBytes + param, as: Float16.self))
        return z + s * Float(code)
    }

    @inline(__always) private func store<E: KVElement>(_: E.Type, row: Int, keys k: UnsafePointer<Float>,
                                                         values v: UnsafePointer<Float>, kvHeads: Int, headDim: Int,
                                                         blockSize: Int) {
        let kvDim = kvHeads * headDim
        let block = row / blockSize, slot = row % blockSize
        let vals = values.assumingMemoryBound(to: E.self) + block * blockSize * kvDim + slot * headDim
        for h in 0..<kvHeads {
            let dst = vals + h * blockSize * headDim, src = v + h * headDim
            for d in 0..<headDim { dst[d] = E(rounding: src[d]) }
        }
        let base = keys.assumingMemoryBound(to: E.self) + block * blockSize * kvDim + slot
        for i in 0..<kvDim { base[i * blockSize] = E(rounding: k[i]) }
    }

    /// Key element at `index` (see `keyIndex`) and value element at `index` (see `valueIndex`), as fp32.
    /// (fp32 and fp16 caches; `element` reads every type.)
    public func key(at index: Int) -> Float {
        precondition(dtype != .u8, "key(at:) reads fp32 and fp16 caches")
        return dtype == .f32 ? keys.assumingMemoryBound(to: Float.self)[index] : Float(keys.assumingMemoryBound(to: Float16.self)[index])
    }

    public func value(at index: Int) -> Float {
        precondition(dtype != .u8, "value(at:) reads fp32 and fp16 caches")
        return dtype == .f32 ? values.assumingMemoryBound(to: Float.self)[index] : Float(values.assumingMemoryBound(to: Float16.self)[index])
    }
}

/// An element type of the KV cache: how the attention kernels load it as fp32.
protocol KVElement {
    init(rounding: Float)
    static func load16(_ p: UnsafePointer<Self>) -> SIMD16<Float>
    static func load1(_ p: UnsafePointer<Self>) -> Float
}

extension Float: KVElement {
    @inline(__always) init(rounding v: Float) { self = v }
    @inline(__always) static func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
    }
    @inline(__always) static func load1(_ p: UnsafePointer<Float>) -> Float { p.pointee }
}

extension Float16: KVElement {
    @inline(__always) init(rounding v: Float) { self = Float16(v) }
    /// 16 halves to floats: two F16C conversions on x86 (the generic SIMD conversion is not inlined).
    @inline(__always) static func load16(_ p: UnsafePointer<Float16>) -> SIMD16<Float> {
        #if arch(x86_64)
        let lo = _mm256_cvtph_ps(UnsafeRawPointer(p).loadUnaligned(as: __m128i.self))
        let hi = _mm256_cvtph_ps(UnsafeRawPointer(p + 8).loadUnaligned(as: __m128i.self))
        return SIMD16<Float>(lowHalf: lo, highHalf: hi)
        #else
        return SIMD16<Float>(UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float16>.self))
        #endif
    }
    @inline(__always) static func load1(_ p: UnsafePointer<Float16>) -> Float { Float(p.pointee) }
}

/// Causal attention of each new token over its own sequence's cached keys and values, flash-style: scores and
/// softmax one partition of keys at a time, never materializing the whole score matrix.
///
/// Work items are tiles of up to `tileRows` query rows — consecutive tokens of one sequence times the query heads
/// that share a KV head — so every key and value loaded serves all of them. Each row's keys are processed in
/// fixed partitions of `partitionKeys` keys: a partition's softmax state (max, sum, weighted values) is computed
/// from scratch and merged into the row's running state in partition order. With few items (decode of a few
/// sequences), the partitions of one item are computed on different threads and merged afterwards in the same
/// order, so long contexts use every thread. A row's arithmetic never depends on its tile, on the other
/// sequences in the batch or on the split: outputs are batch invariant.
///
/// q: [tokens, heads·headDim]; out: [tokens, heads·headDim].
public func pagedAttention(q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, kv: LayerKV,
                           sequences: [AttentionSequence], heads: Int, kvHeads: Int, headDim: Int,
                           blockSize: Int, pool: ThreadPool, workspace: AttentionWorkspace? = nil) {
    let workspace = workspace ?? AttentionWorkspace()
    let group = heads / kvHeads
    let tileTokens = max(1, AttentionPlan.tileRows / group)
    // Tiles: (sequence, first new token, token count).
    var tiles: [(seq: Int32, first: Int32, count: Int32)] = []
    for (si, s) in sequences.enumerated() {
        var t = 0
        while t < s.tokenCount {
            let c = min(tileTokens, s.tokenCount - t)
            tiles.append((Int32(si), Int32(t), Int32(c)))
            t += c
        }
    }
    if tiles.isEmpty { return }
    let partKeys = AttentionPlan.partitionKeys(blockSize: blockSize)
    let plan = AttentionPlan(heads: heads, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize,
                             rows: tileTokens * group, partitionKeys: partKeys)
    let items = tiles.count * kvHeads
    tiles.withUnsafeBufferPointer { tiles in
    sequences.withUnsafeBufferPointer { seqs in
        /// Partitions of an item: those of the longest context among its tokens.
        func partitions(_ tile: (seq: Int32, first: Int32, count: Int32)) -> Int {
            let s = seqs[Int(tile.seq)]
            let context = s.startPosition + Int(tile.first + tile.count)
            return (context + partKeys - 1) / partKeys
        }
        /// Starts loading the first two key runs of partition `p` of `item` (`attend` requests the rest as it goes).
        func prefetch(item: Int, partition p: Int) {
            let tile = tiles[item / kvHeads], kvh = item % kvHeads
            let s = seqs[Int(tile.seq)]
            let context = s.startPosition + Int(tile.first + tile.count)
            let start = p * partKeys, end = min(context, start + 2 * blockSize, start + partKeys)
            let run = kv.dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: true), blockBytes = kvHeads * run
            s.blockTable.withUnsafeBufferPointer { table in
                var pos = start
                while pos < end {
                    pagoda_prefetch(kv.keys + Int(table[pos / blockSize]) * blockBytes + kvh * run, Int64(run))
                    pos += blockSize
                }
            }
        }
        let maxParts = tiles.reduce(0) { max($0, partitions($1)) }
        let split = pool.threadCount > 1 && maxParts > 1 && items < 4 * pool.threadCount
        if !split {
            // Later tiles attend to more keys: chunks are claimed from the end of the batch first, a few per
            // thread, so the threads finish together.
            let chunks = pool.threadCount == 1 ? 1 : min(items, pool.threadCount * 8)
            let scratch = AttentionScratch(plan: plan, slots: chunks, workspace: workspace)
            pool.forEachChunk(chunks) { c in
                let range = (items - items * (c + 1) / chunks)..<(items - items * c / chunks)
                let w = scratch.slot(c)
                if let first = range.first { prefetch(item: first, partition: 0) }
                for item in range {
                    let tile = tiles[item / kvHeads]
                    let kvh = item % kvHeads
                    let rows = w.load(q: q, tile: tile, seq: seqs[Int(tile.seq)], kvh: kvh, plan: plan, dtype: kv.dtype)
                    w.resetRunning(rows: rows)
                    let parts = partitions(tile)
                    for p in 0..<parts {
                        // The next partition's keys and values start loading while this one is computed.
                        if p + 1 < parts { prefetch(item: item, partition: p + 1) }
                        else if item + 1 < range.upperBound { prefetch(item: item + 1, partition: 0) }
                        w.attend(partition: p, kv: kv, table: seqs[Int(tile.seq)].blockTable, kvh: kvh, rows: rows,
                                 into: w.partial)
                        w.mergePartial(w.partial, rows: rows)
                    }
                    w.store(out: out, tile: tile, seq: seqs[Int(tile.seq)], kvh: kvh, rows: rows)
                }
            }
        } else {
            // Every (item, partition) on its own, then the merges in partition order.
            let stride = maxParts
            let partials = AttentionScratch(plan: plan, slots: items * stride, workspace: workspace)
            let pairs = items * stride
            let chunks = min(pairs, pool.threadCount * 8)
            pool.forEachChunk(chunks) { c in
                let range = (pairs * c / chunks)..<(pairs * (c + 1) / chunks)
                var primed = false
                for pair in range {
                    let item = pair / stride, p = pair % stride
                    let tile = tiles[item / kvHeads]
                    if p >= partitions(tile) { continue }
                    // This pair's keys and values, if not requested yet, and the next pair's while this one runs.
                    if !primed { prefetch(item: item, partition: p); primed = true }
                    let next = pair + 1
                    if next < range.upperBound, next % stride < partitions(tiles[next / stride / kvHeads]) {
                        prefetch(item: next / stride, partition: next % stride)
                    }
                    let kvh = item % kvHeads
                    let w = partials.slot(pair)
                    let rows = w.load(q: q, tile: tile, seq: seqs[Int(tile.seq)], kvh: kvh, plan: plan, dtype: kv.dtype)
                    w.attend(partition: p, kv: kv, table: seqs[Int(tile.seq)].blockTable, kvh: kvh, rows: rows,
                             into: w.partial)
                }
            }
            pool.parallelFor(items) { range in
                for item in range {
                    let tile = tiles[item / kvHeads]
                    let kvh = item % kvHeads
                    let w = partials.slot(item * stride)
                    let rows = Int(tile.count) * group
                    w.resetRunning(rows: rows)
                    for p in 0..<partitions(tile) {
                        w.mergePartial(partials.slot(item * stride + p).partial, rows: rows)
                    }
                    w.store(out: out, tile: tile, seq: seqs[Int(tile.seq)], kvh: kvh, rows: rows)
                }
            }
        }
    }
    }
}

/// Working memory of `pagedAttention`, kept across calls (one per concurrent caller): grown to the largest
/// call seen, so a forward pass allocates nothing per layer.
public final class AttentionWorkspace: @unchecked Sendable {
    private var buffer: UnsafeMutablePointer<Float>?
    private var capacity = 0

    public init() {}

    deinit { buffer?.deallocate() }

    /// At least `floats` floats, 64-byte aligned; valid until the next call.
    func reserve(floats: Int) -> UnsafeMutablePointer<Float> {
        if floats > capacity || buffer == nil {
            buffer?.deallocate()
            let n = max(floats, capacity * 2, 1024)
            buffer = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64).bindMemory(to: Float.self, capacity: n)
            capacity = n
        }
        return buffer!
    }
}

/// Shapes of one attention call.
struct AttentionPlan {
    /// Query rows (tokens × heads of a group) computed together against each loaded key block.
    static let tileRows = 12
    /// Keys per softmax partition: a multiple of the block size near 256.
    static func partitionKeys(blockSize: Int) -> Int { blockSize * max(1, 256 / blockSize) }

    let heads: Int, kvHeads: Int, headDim: Int, blockSize: Int
    /// Rows per tile (tokens per tile × group size).
    let rows: Int
    let partitionKeys: Int
    var group: Int { heads / kvHeads }
    var rowStride: Int { kvHeads * headDim }
    /// Row stride of the score buffer: a partition's keys, rounded up to whole vectors.
    var ldScores: Int { (partitionKeys + 15) / 16 * 16 }
}

/// Per-slot working memory of `pagedAttention`: the tile's scaled queries, its rows' contexts, a partition of
/// scores, and the running and partial softmax states (max, sum, weighted values) of every row, carved from the
/// caller's `AttentionWorkspace`.
struct AttentionScratch {
    let plan: AttentionPlan
    let base: UnsafeMutablePointer<Float>
    let slotFloats: Int

    init(plan: AttentionPlan, slots: Int, workspace: AttentionWorkspace) {
        self.plan = plan
        let r = plan.rows, d = plan.headDim
        // queries, scores, running (m, l, acc), partial (m, l, acc), contexts, query group sums and scales, int16
        // queries
        slotFloats = (r * d + r * plan.ldScores + 16 + 2 * (2 * r + r * d) + r + 2 * r * (d / 16) + (r * d + 1) / 2 + 15) / 16 * 16
        base = workspace.reserve(floats: slotFloats * max(1, slots))
    }

    func slot(_ i: Int) -> AttentionSlot { AttentionSlot(plan: plan, base: base + i * slotFloats) }
}

/// Softmax state of `rows` rows: maxima, sums and weighted value sums ([rows × headDim]).
struct SoftmaxState {
    let m: UnsafeMutablePointer<Float>
    let l: UnsafeMutablePointer<Float>
    let acc: UnsafeMutablePointer<Float>
}

struct AttentionSlot {
    let plan: AttentionPlan
    let queries: UnsafeMutablePointer<Float>
    let scores: UnsafeMutablePointer<Float>
    let running: SoftmaxState
    let partial: SoftmaxState
    /// Visible keys of each row (its position + 1), as Float-sized Int32 storage.
    let contexts: UnsafeMutablePointer<Int32>
    /// Sums of each row's scaled query over each group of 16 dimensions ([rows × headDim/16]; u8 keys).
    let querySums: UnsafeMutablePointer<Float>
    /// The scaled queries as int16 steps per group of 16 dimensions, and the steps ([rows × headDim/16]; u8 keys).
    let queries16: UnsafeMutablePointer<Int16>
    let queryScales: UnsafeMutablePointer<Float>

    init(plan: AttentionPlan, base: UnsafeMutablePointer<Float>) {
        self.plan = plan
        let r = plan.rows, d = plan.headDim
        queries = base
        scores = base + r * d
        var p = scores + r * plan.ldScores + 16
        running = SoftmaxState(m: p, l: p + r, acc: p + 2 * r)
        p += 2 * r + r * d
        partial = SoftmaxState(m: p, l: p + r, acc: p + 2 * r)
        p += 2 * r + r * d
        contexts = UnsafeMutableRawPointer(p).bindMemory(to: Int32.self, capacity: r)
        querySums = p + r
        queryScales = querySums + r * (d / 16)
        queries16 = UnsafeMutableRawPointer(queryScales + r * (d / 16)).bindMemory(to: Int16.self, capacity: r * d)
    }

    /// Copies the tile's queries for KV head `kvh` (row = token·group + head in group), scaled by 1/√d, and
    /// records each row's context (and, for u8 keys, the query's group sums and int16 steps). Returns the row count.
    func load(q: UnsafePointer<Float>, tile: (seq: Int32, first: Int32, count: Int32), seq: AttentionSequence, kvh: Int,
              plan: AttentionPlan, dtype: KVCacheDType) -> Int {
        let g = plan.group, d = plan.headDim
        let scale = 1 / Float(d).squareRoot()
        var r = 0
        for t in 0..<Int(tile.count) {
            let token = seq.tokenStart + Int(tile.first) + t
            for h in 0..<g {
                let src = q + token * plan.heads * d + (kvh * g + h) * d
                let dst = queries + r * d
                for i in 0..<d { dst[i] = src[i] * scale }
                if dtype == .u8 {
                    pagoda_attn_query_i16(dst, Int64(d), queries16 + r * d, queryScales + r * (d / 16),
                                          querySums + r * (d / 16))
                }
                contexts[r] = Int32(seq.startPosition + Int(tile.first) + t + 1)
                r += 1
            }
        }
        return r
    }

    func resetRunning(rows: Int) {
        running.m.initialize(repeating: -.infinity, count: rows)
        running.l.initialize(repeating: 0, count: rows)
        running.acc.initialize(repeating: 0, count: rows * plan.headDim)
    }

    /// The softmax state of every row over the keys of partition `p` (keys past a row's context excluded):
    /// all scores of the partition first, then one softmax per row, then the weighted sum of values.
    func attend(partition p: Int, kv: LayerKV, table: [Int32], kvh: Int, rows: Int, into st: SoftmaxState) {
        switch kv.dtype {
        case .f32: attend(Float.self, partition: p, kv: kv, table: table, kvh: kvh, rows: rows, into: st)
        case .f16: attend(Float16.self, partition: p, kv: kv, table: table, kvh: kvh, rows: rows, into: st)
        case .u8: attendU8(partition: p, kv: kv, table: table, kvh: kvh, rows: rows, into: st)
        }
    }

    private func attend<E: KVElement>(_: E.Type, partition p: Int, kv: LayerKV, table: [Int32], kvh: Int, rows: Int,
                                      into st: SoftmaxState) {
        let keysBase = UnsafePointer(kv.keys.assumingMemoryBound(to: E.self))
        let valuesBase = UnsafePointer(kv.values.assumingMemoryBound(to: E.self))
        let bs = plan.blockSize, d = plan.headDim, stride = plan.rowStride, ld = plan.ldScores
        let run = bs * d * MemoryLayout<E>.size
        attendPartition(p, table: table, rows: rows, into: st) { table, start, end in
            var pos = start
            while pos < end {
                // Spread the requests over the loop (a burst of them stalls the core): the key run two blocks
                // ahead, and this block's value run for the P·V pass after the scores.
                let block = Int(table[pos / bs])
                if pos + 2 * bs < end {
                    pagoda_prefetch(keysBase + Int(table[pos / bs + 2]) * bs * stride + kvh * d * bs, Int64(run))
                }
                pagoda_prefetch(valuesBase + block * bs * stride + kvh * bs * d, Int64(run))
                blockScores(q: queries, rows: rows, keys: keysBase + block * bs * stride + kvh * d * bs, blockSize: bs,
                            n: min(bs, end - pos), headDim: d, scores: scores + (pos - start), ldScores: ld)
                pos += min(bs, end - pos)
            }
        } values: { table, r, same, keys, start in
            accumulateValues(acc: st.acc + r * d, rows: same, probs: scores + r * ld, ldProbs: ld,
                             keys: keys, start: start, table: table, values: valuesBase + kvh * bs * d,
                             blockSize: bs, blockStride: bs * stride, headDim: d)
        }
    }

    /// `attend` over the u8 cache: the same partition, softmax and order, with the C kernels that read codes.
    private func attendU8(partition p: Int, kv: LayerKV, table: [Int32], kvh: Int, rows: Int, into st: SoftmaxState) {
        let bs = plan.blockSize, d = plan.headDim, ld = plan.ldScores
        let keyRun = kv.dtype.runBytes(blockSize: bs, headDim: d, keys: true)
        let valueRun = kv.dtype.runBytes(blockSize: bs, headDim: d, keys: false)
        let keyStride = plan.kvHeads * keyRun, valueStride = plan.kvHeads * valueRun
        let keys = UnsafePointer(kv.keys.assumingMemoryBound(to: UInt8.self)) + kvh * keyRun
        let values = UnsafePointer(kv.values.assumingMemoryBound(to: UInt8.self)) + kvh * valueRun
        attendPartition(p, table: table, rows: rows, into: st, paddedValueRows: Int(PAGODA_ATTN_VALUE_ROWS)) { table, start, end in
            pagoda_attn_scores_u8(queries16, queryScales, querySums, Int64(rows), table, keys, Int64(keyStride),
                                  Int64(keyRun), values, Int64(valueStride), Int64(valueRun), Int64(start), Int64(end),
                                  Int64(bs), Int64(d), scores, Int64(ld))
        } values: { table, r, same, n, start in
            pagoda_attn_values_u8(st.acc + r * d, Int64(same), scores + r * ld, Int64(ld), Int64(n), Int64(start), table,
                                  values, Int64(bs), Int64(valueStride), Int64(d))
        }
    }

    /// The skeleton of `attend`: `scoreKeys(table, start, end)` writes the scores of the keys [start, end) at
    /// columns 0 ..< end − start; then each row's softmax; then `values(table, r, same, keys,
    /// start)` accumulates rows r ..< r + same: up to four rows of one token, sharing their `keys` count, or, with
    /// `paddedValueRows`, up to that many consecutive rows, each row's probabilities zero past its own keys and
    /// `keys` their largest count.
    @inline(__always)
    private func attendPartition(_ p: Int, table: [Int32], rows: Int, into st: SoftmaxState, paddedValueRows: Int = 0,
                                 scoreKeys: (UnsafePointer<Int32>, Int, Int) -> Void,
                                 values: (UnsafePointer<Int32>, Int, Int, Int, Int) -> Void) {
        let ld = plan.ldScores
        st.acc.initialize(repeating: 0, count: rows * plan.headDim)
        let start = p * plan.partitionKeys
        var maxContext = 0
        for r in 0..<rows { maxContext = max(maxContext, Int(contexts[r])) }
        let end = min(start + plan.partitionKeys, maxContext)
        table.withUnsafeBufferPointer { table in
            let table = table.baseAddress!
            scoreKeys(table, start, end)
            // Each row's softmax over its own keys; with padding, its probabilities are zero past them up to
            // the partition's width (softmaxRow zeroes its last vector's lanes past nr, this the rest).
            let width = end - start
            for r in 0..<rows {
                let nr = min(end, Int(contexts[r])) - start
                let row = scores + r * ld
                if nr <= 0 {
                    st.m[r] = -.infinity
                    st.l[r] = 0
                    if paddedValueRows > 0 { row.update(repeating: 0, count: width) }
                } else {
                    (st.m[r], st.l[r]) = softmaxRow(row, n: nr)
                    let written = (nr + 15) / 16 * 16
                    if paddedValueRows > 0 && written < width { (row + written).update(repeating: 0, count: width - written) }
                }
            }
            var r = 0
            while r < rows {
                if paddedValueRows > 0 {
                    let count = min(paddedValueRows, rows - r)
                    var keys = 0
                    for i in r..<r + count { keys = max(keys, min(end, Int(contexts[i])) - start) }
                    if keys > 0 { values(table, r, count, keys, start) }
                    r += count
                } else {
                    // Rows of one token (the heads of the group) share their key count: up to four at a time
                    // through P·V, so each value row is loaded once for all of them.
                    let nr = min(end, Int(contexts[r])) - start
                    var same = 1
                    while same < 4 && r + same < rows && contexts[r + same] == contexts[r] { same += 1 }
                    if nr > 0 { values(table, r, same, nr, start) }
                    r += same
                }
            }
        }
    }

    /// running ← running ⊕ partial for every row (a partition without keys leaves a row unchanged).
    func mergePartial(_ pt: SoftmaxState, rows: Int) {
        let d = plan.headDim
        for r in 0..<rows {
            let pm = pt.m[r]
            if pm == -.infinity { continue }
            let m = running.m[r]
            let newMax = max(m, pm)
            let a = m == -.infinity ? 0 : expScalar(m - newMax)
            let b = expScalar(pm - newMax)
            running.l[r] = running.l[r] * a + pt.l[r] * b
            let acc = running.acc + r * d, pacc = pt.acc + r * d
            for i in 0..<d { acc[i] = (acc[i] * a).addingProduct(pacc[i], b) }
            running.m[r] = newMax
        }
    }

    /// Writes each row's output, the running weighted values over the running sum.
    func store(out: UnsafeMutablePointer<Float>, tile: (seq: Int32, first: Int32, count: Int32), seq: AttentionSequence,
               kvh: Int, rows: Int) {
        let g = plan.group, d = plan.headDim
        for r in 0..<rows {
            let token = seq.tokenStart + Int(tile.first) + r / g
            let o = out + token * plan.heads * d + (kvh * g + r % g) * d
            let acc = running.acc + r * d
            let inv = 1 / running.l[r]
            for i in 0..<d { o[i] = acc[i] * inv }
        }
    }
}

/// scores[r·ld + j] = Σ_d q_r[d]·k_j[d] for `rows` (pre-scaled) query rows and the keys of one block of
/// transposed keys ([dim][slot], `blockSize` slots); lanes past `n` hold garbage. The sum is taken in two
/// chains, even and odd dimensions, added at the end, for every row and key alike: with transposed keys,
/// 16 keys are computed per vector and no horizontal sum is needed.
@inline(never)
func blockScores<E: KVElement>(q: UnsafePointer<Float>, rows: Int, keys: UnsafePointer<E>, blockSize: Int, n: Int,
                 headDim: Int, scores: UnsafeMutablePointer<Float>, ldScores ld: Int) {
    typealias V = SIMD16<Float>
    let d2 = headDim / 2 * 2
    if blockSize % 16 == 0 {
        var j0 = 0
        while j0 < n {
            let k = keys + j0
            var r = 0
            // Three rows at a time: six independent chains.
            while r + 3 <= rows {
                let q0 = q + r * headDim, q1 = q0 + headDim, q2 = q1 + headDim
                var a0 = V(), b0 = V(), a1 = V(), b1 = V(), a2 = V(), b2 = V()
                var dd = 0
                while dd < d2 {
                    let ke = E.load16(k + dd * blockSize)
                    let ko = E.load16(k + (dd + 1) * blockSize)
                    a0.addProduct(V(repeating: q0[dd]), ke); b0.addProduct(V(repeating: q0[dd + 1]), ko)
                    a1.addProduct(V(repeating: q1[dd]), ke); b1.addProduct(V(repeating: q1[dd + 1]), ko)
                    a2.addProduct(V(repeating: q2[dd]), ke); b2.addProduct(V(repeating: q2[dd + 1]), ko)
                    dd += 2
                }
                if d2 < headDim {
                    let ke = E.load16(k + d2 * blockSize)
                    a0.addProduct(V(repeating: q0[d2]), ke)
                    a1.addProduct(V(repeating: q1[d2]), ke)
                    a2.addProduct(V(repeating: q2[d2]), ke)
                }
                UnsafeMutableRawPointer(scores + r * ld + j0).storeBytes(of: a0 + b0, as: V.self)
                UnsafeMutableRawPointer(scores + (r + 1) * ld + j0).storeBytes(of: a1 + b1, as: V.self)
                UnsafeMutableRawPointer(scores + (r + 2) * ld + j0).storeBytes(of: a2 + b2, as: V.self)
                r += 3
            }
            while r < rows {
                let q0 = q + r * headDim
                var a0 = V(), b0 = V()
                var dd = 0
                while dd < d2 {
                    a0.addProduct(V(repeating: q0[dd]), E.load16(k + dd * blockSize))
                    b0.addProduct(V(repeating: q0[dd + 1]), E.load16(k + (dd + 1) * blockSize))
                    dd += 2
                }
                if d2 < headDim {
                    a0.addProduct(V(repeating: q0[d2]), E.load16(k + d2 * blockSize))
                }
                UnsafeMutableRawPointer(scores + r * ld + j0).storeBytes(of: a0 + b0, as: V.self)
                r += 1
            }
            j0 += 16
        }
    } else {
        for r in 0..<rows {
            let q0 = q + r * headDim
            for j in 0..<n {
                var a: Float = 0, b: Float = 0
                var dd = 0
                while dd < d2 {
                    a = a.addingProduct(q0[dd], E.load1(keys + dd * blockSize + j))
                    b = b.addingProduct(q0[dd + 1], E.load1(keys + (dd + 1) * blockSize + j))
                    dd += 2
                }
                if d2 < headDim { a = a.addingProduct(q0[d2], E.load1(keys + d2 * blockSize + j)) }
                scores[r * ld + j] = a + b
            }
        }
    }
}

/// acc[r][·] = Σ_j probs[r][j] · v_j over `keys` keys starting at position `start` of a sequence (its block
/// table gives where each value row lives), for `rows` (1 to 4) rows sharing those keys. `values` points at the
/// head's values in block 0 ([slot][dim] within a block, blocks `blockStride` elements apart). Every element is
/// the same chain of fused multiply-adds in key order, starting from 0, whatever the number of rows.
@inline(never)
func accumulateValues<E: KVElement>(acc: UnsafeMutablePointer<Float>, rows: Int, probs: UnsafePointer<Float>,
                                    ldProbs: Int, keys: Int, start: Int, table: UnsafePointer<Int32>,
                                    values: UnsafePointer<E>, blockSize bs: Int, blockStride: Int, headDim: Int) {
    typealias V = SIMD16<Float>
    @inline(__always) func st(_ p: UnsafeMutablePointer<Float>, _ v: V) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
    /// The run of consecutive slots of one block that starts at key j: its length, and the value row of its
    /// first key at column d (consecutive keys of a run are `headDim` apart).
    @inline(__always) func run(from j: Int, column d: Int) -> (Int, UnsafePointer<E>) {
        let pos = start + j, slot = pos % bs
        return (min(bs - slot, keys - j), values + Int(table[pos / bs]) * blockStride + slot * headDim + d)
    }
    var d = 0
    while d + 64 <= headDim {
        if rows >= 3 {
            // Four rows (a fourth row repeats the third when there are three; its sums are dropped).
            let p0 = probs, p1 = probs + ldProbs, p2 = probs + 2 * ldProbs, p3 = probs + (rows - 1) * ldProbs
            var a0 = V(), a1 = V(), a2 = V(), a3 = V(), b0 = V(), b1 = V(), b2 = V(), b3 = V()
            var c0 = V(), c1 = V(), c2 = V(), c3 = V(), e0 = V(), e1 = V(), e2 = V(), e3 = V()
            var j = 0
            while j < keys {
                let (n, first) = run(from: j, column: d)
                var v = first
                let end = j + n
                while j < end {
                    let v0 = E.load16(v), v1 = E.load16(v + 16), v2 = E.load16(v + 32), v3 = E.load16(v + 48)
                    let x = V(repeating: p0[j]), y = V(repeating: p1[j]), z = V(repeating: p2[j]), w = V(repeating: p3[j])
                    a0.addProduct(x, v0); a1.addProduct(x, v1); a2.addProduct(x, v2); a3.addProduct(x, v3)
                    b0.addProduct(y, v0); b1.addProduct(y, v1); b2.addProduct(y, v2); b3.addProduct(y, v3)
                    c0.addProduct(z, v0); c1.addProduct(z, v1); c2.addProduct(z, v2); c3.addProduct(z, v3)
                    e0.addProduct(w, v0); e1.addProduct(w, v1); e2.addProduct(w, v2); e3.addProduct(w, v3)
                    v += headDim
                    j += 1
                }
            }
            st(acc + d, a0); st(acc + d + 16, a1); st(acc + d + 32, a2); st(acc + d + 48, a3)
            var o = acc + headDim + d
            st(o, b0); st(o + 16, b1); st(o + 32, b2); st(o + 48, b3)
            o += headDim
            st(o, c0); st(o + 16, c1); st(o + 32, c2); st(o + 48, c3)
            if rows == 4 {
                o += headDim
                st(o, e0); st(o + 16, e1); st(o + 32, e2); st(o + 48, e3)
            }
        } else {
            let p1 = probs + ldProbs
            var a0 = V(), a1 = V(), a2 = V(), a3 = V()
            var b0 = V(), b1 = V(), b2 = V(), b3 = V()
            // Keys in order, one run of consecutive slots of a block at a time.
            var j = 0
            while j < keys {
                let (n, first) = run(from: j, column: d)
                var v = first
                let end = j + n
                if rows == 2 {
                    while j < end {
                        let p = V(repeating: probs[j]), q = V(repeating: p1[j])
                        let v0 = E.load16(v), v1 = E.load16(v + 16), v2 = E.load16(v + 32), v3 = E.load16(v + 48)
                        a0.addProduct(p, v0); a1.addProduct(p, v1); a2.addProduct(p, v2); a3.addProduct(p, v3)
                        b0.addProduct(q, v0); b1.addProduct(q, v1); b2.addProduct(q, v2); b3.addProduct(q, v3)
                        v += headDim
                        j += 1
                    }
                } else {
                    while j < end {
                        let p = V(repeating: probs[j])
                        a0.addProduct(p, E.load16(v)); a1.addProduct(p, E.load16(v + 16))
                        a2.addProduct(p, E.load16(v + 32)); a3.addProduct(p, E.load16(v + 48))
                        v += headDim
                        j += 1
                    }
                }
            }
            st(acc + d, a0); st(acc + d + 16, a1); st(acc + d + 32, a2); st(acc + d + 48, a3)
            if rows == 2 {
                let o = acc + headDim + d
                st(o, b0); st(o + 16, b1); st(o + 32, b2); st(o + 48, b3)
            }
        }
        d += 64
    }
    // Narrower heads and tails: 16 columns, then single columns, one row at a time.
    while d < headDim {
        let width = d + 16 <= headDim ? 16 : 1
        for r in 0..<rows {
            let pr = probs + r * ldProbs
            var a = V()
            var a1: Float = 0
            var j = 0
            while j < keys {
                let (n, first) = run(from: j, column: d)
                var v = first
                for i in j..<j + n {
                    if width == 16 { a.addProduct(V(repeating: pr[i]), E.load16(v)) } else { a1 = a1.addingProduct(pr[i], E.load1(v)) }
                    v += headDim
                }
                j += n
            }
            if width == 16 { st(acc + r * headDim + d, a) } else { acc[r * headDim + d] = a1 }
        }
        d += width
    }
}

/// Softmax numerators of one row of `n` scores, in place: returns the maximum m and Σ e^(s − m), and leaves
/// e^(s − m) in the row. 16 scores at a time; the last vector's lanes past `n` are masked out (the row has
/// room for whole vectors).
@inline(__always)
func softmaxRow(_ sc: UnsafeMutablePointer<Float>, n: Int) -> (Float, Float) {
    typealias V = SIMD16<Float>
    let full = n / 16 * 16
    let lanes = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    let tailMask = lanes .>= SIMD16<Int32>(repeating: Int32(n - full))
    var vmax = V(repeating: -.infinity)
    var j = 0
    while j < full {
        let sv = UnsafeRawPointer(sc + j).loadUnaligned(as: V.self)
        vmax.replace(with: sv, where: sv .> vmax)
        j += 16
    }
    if full < n {
        var sv = UnsafeRawPointer(sc + full).loadUnaligned(as: V.self)
        sv.replace(with: -.infinity, where: tailMask)
        vmax.replace(with: sv, where: sv .> vmax)
    }
    let m = horizontalMax(vmax)
    let mv = V(repeating: m)
    var sum = V()
    j = 0
    while j < full {
        let p = expSIMD(UnsafeRawPointer(sc + j).loadUnaligned(as: V.self) - mv)
        UnsafeMutableRawPointer(sc + j).storeBytes(of: p, as: V.self)
        sum += p
        j += 16
    }
    if full < n {
        var p = expSIMD(UnsafeRawPointer(sc + full).loadUnaligned(as: V.self) - mv)
        p.replace(with: 0, where: tailMask)
        UnsafeMutableRawPointer(sc + full).storeBytes(of: p, as: V.self)
        sum += p
    }
    return (m, treeSum(sum))
}

/// Sum of 16 lanes by halves (a fixed order).
@inline(__always) func treeSum(_ v: SIMD16<Float>) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}


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
