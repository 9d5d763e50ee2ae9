#if canImport(Glibc)
import Glibc
#endif
import PagodaKernelsC

/// A weight matrix kept in the file's 16-bit form (F16 or BF16, row-major `[rows × cols]`) and multiplied by
/// fp32 activations. The bytes are copied out of the mapped file into memory of our own, which may use huge
/// pages: streaming a matrix through 4 KiB file pages costs a page walk per page and stops the hardware
/// prefetchers at every page boundary; see `pagoda_hgemm` for the exact arithmetic (the same
/// for every tile shape, so results do not depend on the batch).
public final class HalfMatrix: @unchecked Sendable {
    public static let supportedTypes: Set<DType> = [.f16, .bf16]

    public let rows: Int
    public let cols: Int
    public let dtype: DType
    private let region: HugePageRegion
    private let storage: UnsafeMutableRawPointer

    /// nil when the tensor is not F16/BF16 or not a matrix.
    public init?(_ t: Tensor) {
        guard Self.supportedTypes.contains(t.dtype), t.shape.count >= 2, t.rows > 0, t.columns > 0 else { return nil }
        rows = t.rows
        cols = t.columns
        dtype = t.dtype
        // Groups of 8 rows, chunks of 16 columns: each group's chunk holds its rows' 16 values back to back.
        let chunks = (cols + 15) / 16, groups = (rows + 7) / 8
        let bytes = groups * chunks * 8 * 16 * 2
        (region, storage) = WeightMemory.allocate(byteCount: bytes)
        let src = t.data.assumingMemoryBound(to: UInt16.self)
        let dst = storage.assumingMemoryBound(to: UInt16.self)
        for r in 0..<rows {
            for c in 0..<chunks {
                let n = min(16, cols - c * 16)
                (dst + (((r / 8) * chunks + c) * 8 + r % 8) * 16).update(from: src + r * cols + c * 16, count: n)
            }
        }
    }

    /// Bytes of weights one multiplication reads.
    public var byteCount: Int { (rows + 7) / 8 * 8 * ((cols + 15) / 16 * 16) * 2 }

    /// y[tokens × rows] = x[tokens × cols] · Wᵀ (+ bias), rows split across the pool's threads.
    public func multiply(x: UnsafePointer<Float>, tokens: Int, y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                         pool: ThreadPool) {
        if tokens == 0 { return }
        let w = UnsafePointer(storage.assumingMemoryBound(to: UInt16.self))
        let bf: Int32 = dtype == .bf16 ? 1 : 0
        let (rows, cols) = (self.rows, self.cols)
        // Units of 8 rows (the decode tile), a few per thread; the kernel takes the tokens in L2-sized chunks.
        let units = (rows + 7) / 8
        pool.parallelFor(units) { r in
            pagoda_hgemm(w, bf, Int64(rows), Int64(cols), x, Int64(tokens), y, Int64(rows), Int64(r.lowerBound * 8),
                         Int64(min(rows, r.upperBound * 8)), bias)
        }
    }
}
