import PagodaKernelsC

// Quantized weight matrices multiplied by int8-quantized activations (see pagoda_kernels.h for the layout
// and the exact arithmetic). Weights are repacked at load into groups of 16 interleaved rows so that one
// AVX-512 lane accumulates one row: no horizontal sums, and every token follows the same float operations
// whatever the batch (batch invariance).

/// Activations quantized to int8 blocks of 32, reusable across the matrices that share an input. Each row's
/// `outliersPerRow` largest magnitudes are kept exact (their columns and values) and count as 0 in their blocks.
///
/// The first `wideRows` rows (prompt tokens, see `QuantizedMatrix.wideAvailable`) can be kept as bf16 instead,
/// for the wide product: the matrices multiply them with bf16 tiles, and the rows after with the int8 kernels
/// (whose buffers then start at row `wideRows`).
public final class QuantizedActivations: @unchecked Sendable {
    public private(set) var tokens = 0
    public private(set) var cols = 0
    /// Leading rows kept as bf16 (0 when none is).
    public private(set) var wideRows = 0
    private var wideCapacity = 0  // elements
    private(set) var wide: UnsafeMutablePointer<UInt16>
    private var capacity = 0  // elements
    private(set) var q: UnsafeMutablePointer<Int8>
    private(set) var dx: UnsafeMutablePointer<Float>
    private(set) var sx: UnsafeMutablePointer<Int32>
    private(set) var dxs: UnsafeMutablePointer<Float>
    /// Σq over the first 16 values of each block (for weights with a scale per 16 columns).
    private(set) var sxh: UnsafeMutablePointer<Int32>
    /// Columns and values of each row's exact outliers, `outliersPerRow` per row, largest magnitude first.
    private(set) var outlierColumns: UnsafeMutablePointer<Int32>
    private(set) var outlierValues: UnsafeMutablePointer<Float>
    public static let outliersPerRow = Int(PAGODA_Q_OUTLIERS)
    /// The distinct outlier columns of each chunk of tokens (see `pagoda_outlier_slots`), numbered on the first
    /// multiply after quantizing, once for every matrix and thread that reads these activations.
    private(set) var outlierSlots: UnsafeMutablePointer<Int16>
    private(set) var distinctColumns: UnsafeMutablePointer<Int32>
    private(set) var distinctCounts: UnsafeMutablePointer<Int32>
    private var slotsNumbered = false
    private var rowCapacity = 0

    public init() {
        q = .allocate(capacity: 1); dx = .allocate(capacity: 1); sx = .allocate(capacity: 1); dxs = .allocate(capacity: 1)
        sxh = .allocate(capacity: 1)
        outlierColumns = .allocate(capacity: 1); outlierValues = .allocate(capacity: 1)
        outlierSlots = .allocate(capacity: 1); distinctColumns = .allocate(capacity: 1); distinctCounts = .allocate(capacity: 1)
        wide = .allocate(capacity: 1)
    }

    deinit {
        q.deallocate(); dx.deallocate(); sx.deallocate(); dxs.deallocate(); sxh.deallocate()
        outlierColumns.deallocate(); outlierValues.deallocate()
        outlierSlots.deallocate(); distinctColumns.deallocate(); distinctCounts.deallocate()
        wide.deallocate()
    }

    /// Token count from which quantizing is split over the threads (fewer are done by the caller alone).
    static let parallelTokens = 8

    /// Quantizes `x[tokens × cols]` (cols a multiple of 32), the first `wideRows` rows to bf16; grows the buffers
    /// when needed.
    public func quantize(_ x: UnsafePointer<Float>, tokens: Int, cols: Int, wideRows: Int = 0, pool: ThreadPool) {
        prepare(tokens: tokens, cols: cols, wideRows: wideRows)
        if tokens >= Self.parallelTokens {
            pool.parallelFor(tokens) { r in quantizeRows(x + r.lowerBound * cols, rows: r) }
        } else {
            quantizeRows(x, rows: 0..<tokens)
        }
    }

    /// Sizes the buffers for `tokens × cols` (cols a multiple of 32), the first `wideRows` as bf16, to be filled by
    /// `quantizeRows`.
    func prepare(tokens: Int, cols: Int, wideRows: Int = 0) {
        let w = min(max(wideRows, 0), tokens)
        precondition(w == 0 || QuantizedMatrix.wideAvailable, "bf16 rows need the wide product (AMX-BF16)")
        // The wide kernel reads whole tiles of 16 rows: room for the last one, zero past the rows.
        let padded = (w + 15) / 16 * 16
        if padded * cols > wideCapacity {
            let cap = max(padded * cols, wideCapacity * 2)
            wide.deallocate()
            // Cache-line aligned: every tile row the kernel loads is then one line, not two.
            wide = UnsafeMutableRawPointer.allocate(byteCount: 2 * cap, alignment: 64).bindMemory(to: UInt16.self, capacity: cap)
            wide.initialize(repeating: 0, count: cap)
            wideCapacity = cap
        }
        if padded > w { (wide + w * cols).update(repeating: 0, count: (padded - w) * cols) }
        self.wideRows = w
        let tokens = tokens - w  // the int8 buffers hold the rows after the wide ones
        precondition(cols % 32 == 0, "quantized activations need a multiple of 32 columns")
        precondition(cols <= Int(PAGODA_Q_MAX_COLS), "quantized activations of \(cols) columns: at most \(PAGODA_Q_MAX_COLS)")
        if tokens > rowCapacity {
            let chunk = Int(PAGODA_Q_TOKEN_CHUNK)
            let cap = (max(tokens, rowCapacity * 2) + chunk - 1) / chunk * chunk
            outlierColumns.deallocate(); outlierValues.deallocate()
            outlierSlots.deallocate(); distinctColumns.deallocate(); distinctCounts.deallocate()
            outlierColumns = .allocate(capacity: cap * Self.outliersPerRow)
            outlierValues = .allocate(capacity: cap * Self.outliersPerRow)
            outlierSlots = .allocate(capacity: cap * Self.outliersPerRow)
            distinctColumns = .allocate(capacity: cap * Self.outliersPerRow)
            distinctCounts = .allocate(capacity: cap / chunk)
            rowCapacity = cap
        }
        slotsNumbered = false
        let n = tokens * cols
        if n > capacity {
            let cap = max(n, capacity * 2)
            q.deallocate(); dx.deallocate(); sx.deallocate(); dxs.deallocate(); sxh.deallocate()
            q = .allocate(capacity: cap)
            dx = .allocate(capacity: cap / 32); sx = .allocate(capacity: cap / 32); dxs = .allocate(capacity: cap / 32)
            sxh = .allocate(capacity: cap / 32)
            capacity = cap
        }
        self.tokens = tokens + w
        self.cols = cols
    }

    /// Numbers the distinct outlier columns (once after each quantization; the caller's thread, before a multiply).
    func numberOutlierSlots() {
        if slotsNumbered { return }
        pagoda_outlier_slots(outlierColumns, Int64(tokens - wideRows), outlierSlots, distinctColumns, distinctCounts)
        slotsNumbered = true
    }

    /// Quantizes tokens `rows` of the prepared shape from `x` (which points at the first of them); ranges may
    /// be filled from different threads.
    func quantizeRows(_ x: UnsafePointer<Float>, rows: Range<Int>) {
        var x = x
        if rows.lowerBound < wideRows {
            let w1 = min(rows.upperBound, wideRows)
            pagoda_to_bf16(x, Int64((w1 - rows.lowerBound) * cols), wide + rows.lowerBound * cols)
            if w1 == rows.upperBound { return }
            x += (w1 - rows.lowerBound) * cols
        }
        // Int8 rows are numbered from the first one after the wide rows.
        let rows = max(rows.lowerBound, wideRows) - wideRows..<rows.upperBound - wideRows
        let nb = cols / 32, t = rows.lowerBound
        let k = Self.outliersPerRow
        pagoda_quantize_q8(x, Int64(rows.count), Int64(cols), q + t * cols, dx + t * nb, sx + t * nb, dxs + t * nb,
                           sxh + t * nb, outlierColumns + t * k, outlierValues + t * k)
    }
}

public enum QuantizedMatrixError: Error, CustomStringConvertible {
    case unsupported(DType)
    case badShape([Int])
    public var description: String {
        switch self {
        case .unsupported(let t): return "QuantizedMatrix: \(t) is not supported"
        case .badShape(let s): return "QuantizedMatrix: shape \(s) needs columns that are a multiple of 32"
        }
    }
}

public final class QuantizedMatrix: @unchecked Sendable {
    public static let groupRows = Int(PAGODA_Q_ROWS)
    public static let supportedTypes: Set<DType> = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K]

    public let rows: Int
    public let cols: Int
    public let dtype: DType
    private let region: HugePageRegion
    private let storage: UnsafeMutableRawPointer
    private(set) var desc: pagoda_qmat
    /// Scratch for the `multiply(x:...)` convenience (callers sharing an input should quantize once and call
    /// `multiply(activations:...)`). Not for concurrent use.
    private let scratch = QuantizedActivations()

    public init(_ tensor: Tensor) throws {
        let t = tensor.dtype
        guard Self.supportedTypes.contains(t) else { throw QuantizedMatrixError.unsupported(t) }
        rows = tensor.rows
        cols = tensor.columns
        dtype = t
        guard cols % 32 == 0, cols % t.blockSize == 0, rows > 0 else { throw QuantizedMatrixError.badShape(tensor.shape) }
        // Codes of up to 6 bits: their low 4 bits as nibbles and bits 4 and 5 as bit planes (the file's size,
        // not a byte per weight); Q8_0's codes stay bytes.
        let nibble = t != .q8_0
        let highBits = switch t { case .q5_0, .q5_1, .q5_K: 1; case .q6_K: 2; default: 0 }
        let hasMin = t == .q4_1 || t == .q5_1 || t == .q4_K || t == .q5_K
        // Q6_K has a scale per 16 columns: the block's second scale goes where a min would.
        let split = t == .q6_K
        let offset: Int32 = switch t { case .q4_0: 8; case .q5_0: 16; case .q6_K: 32; case .q8_0: 128; default: 0 }
        let R = Self.groupRows
        let groups = (rows + R - 1) / R
        let nb = cols / 32
        // Legacy types store fp16 scales: keeping them fp16 is exact and saves bandwidth. The K-quants' products
        // of scales need fp32.
        let half = t != .q4_K && t != .q5_K && t != .q6_K
        let scaleBytes = half ? 32 : 64
        let wofs = scaleBytes * (hasMin || split ? 2 : 1)
        let blockBytes = wofs + (nibble ? 256 + 64 * highBits : 512)
        let total = groups * nb * blockBytes
        (region, storage) = WeightMemory.allocate(byteCount: total)
        desc = pagoda_qmat(data: UnsafePointer(storage.assumingMemoryBound(to: UInt8.self)), rows: Int64(rows),
                           cols: Int64(cols), groups: Int64(groups), blocks: Int64(nb), block_bytes: Int64(blockBytes),
                           nibble: nibble ? 1 : 0, has_min: hasMin ? 1 : 0, offset: offset, half_scales: half ? 1 : 0,
                           split: split ? 1 : 0, high_bits: Int32(highBits))
        let rowBytes = t.byteCount(elements: cols)
        var codes = [UInt8](repeating: 0, count: 32)
        codes.withUnsafeMutableBufferPointer { codes in
            for r in 0..<rows {
                let g = r / R, i = r % R
                let src = tensor.data + r * rowBytes
                for b in 0..<nb {
                    let blk = storage + (g * nb + b) * blockBytes
                    let (d, m) = extractBlock(t, src, b, codes.baseAddress!)
                    if half {
                        blk.storeBytes(of: Float16(d).bitPattern, toByteOffset: 2 * i, as: UInt16.self)
                        if hasMin { blk.storeBytes(of: Float16(m).bitPattern, toByteOffset: scaleBytes + 2 * i, as: UInt16.self) }
                    } else {
                        blk.storeBytes(of: d, toByteOffset: 4 * i, as: Float.self)
                        if hasMin || split { blk.storeBytes(of: m, toByteOffset: scaleBytes + 4 * i, as: Float.self) }
                    }
                    let w = (blk + wofs).assumingMemoryBound(to: UInt8.self)
                    for k in 0..<8 {
                        for j in 0..<4 {
                            let u = codes[4 * k + j]
                            if nibble {
                                let o = (k & 3) * 64 + i * 4 + j
                                w[o] |= k < 4 ? u & 15 : (u & 15) << 4
                                let bit = i * 4 + j
                                for p in 0..<highBits where (u >> (4 + p)) & 1 != 0 {
                                    w[256 + 64 * p + 8 * k + bit / 8] |= 1 << UInt8(bit % 8)
                                }
                            } else {
                                w[k * 64 + i * 4 + j] = u
                            }
                        }
                    }
                }
            }
        }
    }

    /// Bytes of repacked weights.
    public var byteCount: Int { Int(desc.groups * desc.blocks * desc.block_bytes) }

    /// y[tokens × rows] = x[tokens × cols] · Wᵀ (+ bias). Quantizes `x` into the matrix's own scratch.
    public func multiply(x: UnsafePointer<Float>, tokens: Int, y: UnsafeMutablePointer<Float>,
                         bias: UnsafePointer<Float>?, pool: ThreadPool) {
        scratch.quantize(x, tokens: tokens, cols: cols, pool: pool)
        multiply(activations: scratch, y: y, bias: bias, pool: pool)
    }

    /// y[tokens × rows] = a · Wᵀ (+ bias) for activations already quantized.
    public func multiply(activations a: QuantizedActivations, y: UnsafeMutablePointer<Float>,
                         bias: UnsafePointer<Float>?, pool: ThreadPool) {
        QuantizedMatrix.multiplyMany([.init(self, y: y, bias: bias)], activations: a, pool: pool)
    }

    /// Chunks to split `groups` row groups into for `tokens` tokens. One token (decode) streams weights from
    /// DRAM: one contiguous range per thread, so each stream restarts (and the prefetcher ramps up) once per op
    /// instead of once per chunk; batches keep a few chunks per thread for balance.
    private static func chunkCount(groups: Int, tokens: Int, pool: ThreadPool) -> Int {
        tokens == 1 ? min(groups, pool.threadCount) : pool.chunkCount(for: groups)
    }

    /// Number of 16-row groups (the unit of work split across threads).
    public var groupCount: Int { Int(desc.groups) }

    /// The rows of a range of groups.
    private func rows(of groups: Range<Int>) -> Range<Int> {
        groups.lowerBound * Self.groupRows..<min(groups.upperBound * Self.groupRows, rows)
    }

    /// Splits `groups` row groups into the chunks for `tokens` tokens (`chunkCount`) and runs `body` on each
    /// non-empty group range, in parallel.
    private static func forEachGroupRange(_ groups: Int, tokens: Int, pool: ThreadPool, _ body: (Range<Int>) -> Void) {
        let chunks = chunkCount(groups: groups, tokens: tokens, pool: pool)
        pool.forEachChunk(chunks) { c in
            let lo = groups * c / chunks, hi = groups * (c + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
    }

    /// One matrix of a `multiplyMany` call: y = a · Wᵀ (+ bias).
    public struct Job {
        public let matrix: QuantizedMatrix
        public let y: UnsafeMutablePointer<Float>
        public let bias: UnsafePointer<Float>?
        public init(_ matrix: QuantizedMatrix, y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>? = nil) {
            self.matrix = matrix
            self.y = y
            self.bias = bias
        }
    }

    @inline(__always) private func gemm(_ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
                                        _ bias: UnsafePointer<Float>?, groups: Range<Int>) {
        if groups.isEmpty { return }
        withUnsafePointer(to: desc) { d in
            let w = a.wideRows
            if w > 0 {
                pagoda_qgemm_wide(d, a.wide, Int64(w), y, Int64(rows), Int64(groups.lowerBound),
                                  Int64(groups.upperBound), bias, 0)
            }
            if w < a.tokens { gemmInt8(d, a, y, bias, groups: groups) }
        }
    }

    /// The int8 rows of `a` (those after its wide rows), into their rows of y.
    @inline(__always) private func gemmInt8(_ d: UnsafePointer<pagoda_qmat>, _ a: QuantizedActivations,
                                            _ y: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>?,
                                            groups: Range<Int>) {
        let w = a.wideRows
        pagoda_qgemm(d, a.q, a.dx, a.sx, a.dxs, a.sxh, a.outlierColumns, a.outlierValues, a.outlierSlots,
                     a.distinctColumns, a.distinctCounts, Int64(a.tokens - w), y + w * rows, Int64(rows),
                     Int64(groups.lowerBound), Int64(groups.upperBound), bias)
    }

    /// residual[tokens × rows] += a · Wᵀ (+ bias), bitwise a product into `scratch` then `addInPlace`: the wide rows
    /// add their tiles to the residual directly, the int8 rows go through `scratch`, each thread adding the rows it
    /// computed.
    public func multiplyAdd(activations a: QuantizedActivations, to residual: UnsafeMutablePointer<Float>,
                            scratch: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, pool: ThreadPool) {
        precondition(a.cols == cols, "activation width \(a.cols) != matrix columns \(cols)")
        if a.tokens == 0 { return }
        a.numberOutlierSlots()
        let w = a.wideRows, n = a.tokens, rows = rows
        withUnsafePointer(to: desc) { d in
            Self.forEachGroupRange(groupCount, tokens: n, pool: pool) { gr in
                if w > 0 {
                    pagoda_qgemm_wide(d, a.wide, Int64(w), residual, Int64(rows), Int64(gr.lowerBound),
                                      Int64(gr.upperBound), bias, 1)
                }
                if w < n {
                    gemmInt8(d, a, scratch, bias, groups: gr)
                    let r = self.rows(of: gr)
                    for t in w..<n {
                        addInPlace(residual + t * rows + r.lowerBound, scratch + t * rows + r.lowerBound, count: r.count)
                    }
                }
            }
        }
    }

    /// SwiGLU: out[t × rows] = silu(a · gateᵀ) · (a · upᵀ), bitwise what `multiplyMany` of the two followed by
    /// `siluMul` gives. The wide rows take one fused kernel that writes only the product (their gate and up tiles
    /// never leave L1); the int8 rows are multiplied into `out` and `scratch` and combined by each thread for the
    /// rows it computed. `gate` and `up` must have the same shape.
    public static func multiplyGLU(gate: QuantizedMatrix, up: QuantizedMatrix, activations a: QuantizedActivations,
                                   out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                                   pool: ThreadPool) {
        precondition(gate.rows == up.rows && gate.cols == up.cols, "multiplyGLU: gate and up shapes differ")
        precondition(a.cols == gate.cols, "activation width \(a.cols) != matrix columns \(gate.cols)")
        if a.tokens == 0 { return }
        a.numberOutlierSlots()
        let rows = gate.rows, w = a.wideRows, n = a.tokens
        withUnsafePointer(to: gate.desc) { gd in
            withUnsafePointer(to: up.desc) { ud in
                forEachGroupRange(gate.groupCount, tokens: n, pool: pool) { gr in
                    if w > 0 {
                        pagoda_qgemm_wide_glu(gd, ud, a.wide, Int64(w), out, Int64(rows), Int64(gr.lowerBound),
                                              Int64(gr.upperBound))
                    }
                    if w < n {
                        gate.gemmInt8(gd, a, out, nil, groups: gr)
                        up.gemmInt8(ud, a, scratch, nil, groups: gr)
                        let r = gate.rows(of: gr)
                        for t in w..<n {
                            let o = t * rows + r.lowerBound
                            siluMul(out + o, scratch + o, out + o, count: r.count)
                        }
                    }
                }
            }
        }
    }

    /// Multiplies several matrices that read the same activations in one parallel region (one fork/join).
    /// Every output element is computed the same way, whichever thread and chunk computes it.
    ///
    /// Without `epilogue`, the row groups of all the matrices are split into chunks together. With it, the
    /// matrices must have the same number of rows: each chunk computes the same rows of every matrix, then
    /// runs `epilogue(rows)`, which may read and write exactly those rows (of every token) of the outputs.
    public static func multiplyMany(_ jobs: [Job], activations a: QuantizedActivations, pool: ThreadPool,
                                    epilogue: ((Range<Int>) -> Void)? = nil) {
        if a.tokens == 0 || jobs.isEmpty { return }
        for j in jobs { precondition(a.cols == j.matrix.cols, "activation width \(a.cols) != matrix columns \(j.matrix.cols)") }
        a.numberOutlierSlots()
        jobs.withUnsafeBufferPointer { jobs in
            if let epilogue {
                let rows = jobs[0].matrix.rows
                precondition(jobs.allSatisfy { $0.matrix.rows == rows }, "multiplyMany: epilogue needs equal row counts")
                forEachGroupRange(jobs[0].matrix.groupCount, tokens: a.tokens, pool: pool) { gr in
                    for j in jobs { j.matrix.gemm(a, j.y, j.bias, groups: gr) }
                    epilogue(jobs[0].matrix.rows(of: gr))
                }
            } else {
                let total = jobs.reduce(0) { $0 + $1.matrix.groupCount }
                let chunks = chunkCount(groups: total, tokens: a.tokens, pool: pool)
                pool.forEachChunk(chunks) { c in
                    // Global group range of this chunk, mapped onto the matrices it spans.
                    let lo = total * c / chunks, hi = total * (c + 1) / chunks
                    var start = 0
                    for j in jobs {
                        let g = j.matrix.groupCount
                        let a0 = max(lo, start), a1 = min(hi, start + g)
                        if a0 < a1 { j.matrix.gemm(a, j.y, j.bias, groups: a0 - start..<a1 - start) }
                        start += g
                    }
                }
            }
        }
    }

    /// The code path in use (0 scalar, 1 AVX2, 2 AVX-512 VNNI, 3 the same with AMX-INT8 tiles for batches).
    public static var isa: Int { Int(pagoda_q_isa()) }
    /// Whether the wide product (bf16 activations × weights dequantized to bf16, AMX-BF16 tiles) is available for
    /// prompt tokens: only where it runs on tiles (elsewhere every token takes the int8 kernels). The engine gives
    /// it a request's prompt tokens whatever the batch, so a sequence computes the same alone as in any batch.
    public static var wideAvailable: Bool { pagoda_qgemm_wide_available() != 0 }
    /// Forces a code path for tests (-1 restores detection).
    public static func forceISA(_ isa: Int) { pagoda_q_force_isa(Int32(isa)) }
}

@inline(__always) private func f16(_ p: UnsafeRawPointer, _ o: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
}

/// The 6-bit scale and min of sub-block `sub` (0..<8) from the 12 packed bytes of a Q4_K or Q5_K super-block.
private func kScaleMin(_ scales: UnsafeRawPointer, _ sub: Int) -> (Float, Float) {
    func byte(_ o: Int) -> UInt8 { scales.load(fromByteOffset: o, as: UInt8.self) }
    if sub < 4 { return (Float(byte(sub) & 63), Float(byte(sub + 4) & 63)) }
    return (Float((byte(sub + 4) & 0xF) | ((byte(sub - 4) >> 6) << 4)), Float((byte(sub + 4) >> 4) | ((byte(sub) >> 6) << 4)))
}

/// Block `b` (32 columns) of one row: the unsigned codes u and (d, m) such that w = d·(u − offset) + m; for
/// Q6_K, (d1, d2) such that w = d1·(u − 32) in the first 16 columns and d2·(u − 32) in the last 16.
private func extractBlock(_ t: DType, _ row: UnsafeRawPointer, _ b: Int, _ u: UnsafeMutablePointer<UInt8>) -> (Float, Float) {
    switch t {
    case .q4_0, .q4_1:
        let p = row + b * t.blockBytes
        let qs = t == .q4_0 ? 2 : 4
        for j in 0..<16 {
            let v = p.load(fromByteOffset: qs + j, as: UInt8.self)
            u[j] = v & 15
            u[j + 16] = v >> 4
        }
        return (f16(p, 0), t == .q4_1 ? f16(p, 2) : 0)
    case .q5_0, .q5_1:
        let p = row + b * t.blockBytes
        let hOff = t == .q5_0 ? 2 : 4
        let qh = p.loadUnaligned(fromByteOffset: hOff, as: UInt32.self)
        for j in 0..<16 {
            let v = p.load(fromByteOffset: hOff + 4 + j, as: UInt8.self)
            u[j] = (v & 15) | UInt8(((qh >> UInt32(j)) << 4) & 0x10)
            u[j + 16] = (v >> 4) | UInt8((qh >> UInt32(j + 12)) & 0x10)
        }
        return (f16(p, 0), t == .q5_1 ? f16(p, 2) : 0)
    case .q8_0:
        let p = row + b * t.blockBytes
        for j in 0..<32 { u[j] = UInt8(bitPattern: p.load(fromByteOffset: 2 + j, as: Int8.self)) ^ 0x80 }
        return (f16(p, 0), 0)
    case .q4_K:
        let p = row + (b / 8) * t.blockBytes
        let sub = b % 8
        let d = f16(p, 0), dmin = f16(p, 2)
        let (sc, mn) = kScaleMin(p + 4, sub)
        let qs = p + 16 + (sub / 2) * 32
        for l in 0..<32 {
            let v = qs.load(fromByteOffset: l, as: UInt8.self)
            u[l] = sub % 2 == 0 ? v & 15 : v >> 4
        }
        return (d * sc, -(dmin * mn))
    case .q5_K:
        // d, dmin, scales[12], qh[32], qs[128]: sub-block s takes nibble s % 2 of qs[32·(s/2)...] and bit s of qh.
        let p = row + (b / 8) * t.blockBytes
        let sub = b % 8
        let (sc, mn) = kScaleMin(p + 4, sub)
        let qh = p + 16, qs = p + 48 + (sub / 2) * 32
        for l in 0..<32 {
            let v = qs.load(fromByteOffset: l, as: UInt8.self)
            let high = (qh.load(fromByteOffset: l, as: UInt8.self) >> UInt8(sub)) & 1
            u[l] = (sub % 2 == 0 ? v & 15 : v >> 4) | high << 4
        }
        return (f16(p, 0) * sc, -(f16(p, 2) * mn))
    case .q6_K:
        // ql[128], qh[64], scales[16] (int8), d: element e of a super-block is in half n = e / 128, quarter
        // k = e % 128 / 32, lane l = e % 32, with scale scales[e / 16].
        let p = row + (b / 8) * t.blockBytes
        let d = f16(p, 208)
        for j in 0..<32 {
            let e = (b % 8) * 32 + j
            let n = e / 128, k = e % 128 / 32, l = e % 32
            let ql = p.load(fromByteOffset: 64 * n + l + (k & 1) * 32, as: UInt8.self)
            let qh = p.load(fromByteOffset: 128 + 32 * n + l, as: UInt8.self)
            u[j] = (k < 2 ? ql & 15 : ql >> 4) | ((qh >> UInt8(2 * k)) & 3) << 4
        }
        let s1 = p.load(fromByteOffset: 192 + (b % 8) * 2, as: Int8.self)
        let s2 = p.load(fromByteOffset: 192 + (b % 8) * 2 + 1, as: Int8.self)
        return (d * Float(s1), d * Float(s2))
    default:
        preconditionFailure("extractBlock: \(t)")
    }
}
