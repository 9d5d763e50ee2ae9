import PagodaKernelsC

/// An fp32 weight matrix (row-major `[rows × cols]` in the file or dequantized) repacked like `HalfMatrix`: groups
/// of 8 rows, chunks of 16 columns, each group's chunk holding its rows' 16 values back to back, in huge-page
/// memory. A group is one contiguous stream, so decode reads the matrix at the speed the 16-bit matrices do
/// (row-major rows are 8 streams per tile); see `pagoda_sgemm` for the arithmetic, the same for every tile shape
/// (results do not depend on the batch).
public final class FloatMatrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    private let region: HugePageRegion
    private let storage: UnsafeMutablePointer<Float>

    public init(rows: Int, cols: Int, values: UnsafePointer<Float>) {
        precondition(rows > 0 && cols > 0, "FloatMatrix: empty shape")
        self.rows = rows
        self.cols = cols
        let chunks = (cols + 15) / 16, groups = (rows + 7) / 8
        let raw: UnsafeMutableRawPointer
        (region, raw) = WeightMemory.allocate(byteCount: groups * chunks * 8 * 16 * 4)
        storage = raw.bindMemory(to: Float.self, capacity: groups * chunks * 8 * 16)
        for r in 0..<rows {
            for c in 0..<chunks {
                let n = min(16, cols - c * 16)
                (storage + (((r / 8) * chunks + c) * 8 + r % 8) * 16).update(from: values + r * cols + c * 16, count: n)
            }
        }
    }

    public convenience init(_ t: Tensor) {
        let w = t.toFloats()
        self.init(rows: t.rows, cols: t.columns, values: w)
    }

    /// Row `r` of the matrix into `dst[cols]` (an embedding lookup).
    public func row(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(r >= 0 && r < rows, "FloatMatrix: row \(r) out of range")
        let chunks = (cols + 15) / 16
        for c in 0..<chunks {
            let n = min(16, cols - c * 16)
            (dst + c * 16).update(from: storage + (((r / 8) * chunks + c) * 8 + r % 8) * 16, count: n)
        }
    }

    /// y[tokens × rows] = x[tokens × cols] · Wᵀ (+ bias), rows split across the pool's threads.
    public func multiply(x: UnsafePointer<Float>, tokens: Int, y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                         pool: ThreadPool) {
        if tokens == 0 { return }
        let w = UnsafePointer(storage)
        let (rows, cols) = (self.rows, self.cols)
        // Units of 8 rows (the decode tile), a few per thread; the kernel takes the tokens in L2-sized chunks.
        let units = (rows + 7) / 8
        pool.parallelFor(units) { r in
            pagoda_sgemm(w, Int64(cols), x, Int64(tokens), y, Int64(rows), Int64(r.lowerBound * 8),
                         Int64(min(rows, r.upperBound * 8)), bias)
        }
    }
}
