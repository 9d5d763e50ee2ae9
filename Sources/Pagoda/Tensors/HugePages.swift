import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One 2 MiB-aligned allocation that the kernel is asked to back with transparent huge pages. Streaming reads
/// of weights or of the KV cache then do not miss the TLB every 4 KiB, and the hardware prefetcher is not
/// stopped at every 4 KiB page boundary. Pages are mapped on first touch, as with any large allocation.
public final class HugePageRegion: @unchecked Sendable {
    public static let alignment = 1 << 21
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int

    public init(byteCount: Int) {
        let n = max(HugePageRegion.alignment, (byteCount + HugePageRegion.alignment - 1) / HugePageRegion.alignment * HugePageRegion.alignment)
        self.byteCount = n
        base = .allocate(byteCount: n, alignment: HugePageRegion.alignment)
        #if canImport(Glibc)
        _ = madvise(base, n, MADV_HUGEPAGE)
        #endif
    }

    deinit { base.deallocate() }
}

/// Memory for repacked weights: small matrices are packed 64-byte aligned into shared huge-page regions (a
/// region is freed when the last matrix in it goes); large ones get a region of their own.
public enum WeightMemory {
    /// Size of a shared region, and the largest allocation placed in one.
    static let regionBytes = 32 << 20
    static let sharedLimit = 8 << 20

    private final class State: @unchecked Sendable {
        let lock = NSLock()
        weak var current: HugePageRegion?
        var used = 0
    }
    private static let state = State()

    /// `byteCount` bytes, 64-byte aligned and zeroed; the region must be kept alive as long as they are used.
    public static func allocate(byteCount: Int) -> (HugePageRegion, UnsafeMutableRawPointer) {
        let n = (max(byteCount, 1) + 63) / 64 * 64
        if n > sharedLimit {
            let r = HugePageRegion(byteCount: n)
            r.base.initializeMemory(as: UInt8.self, repeating: 0, count: n)
            return (r, r.base)
        }
        let s = state
        s.lock.lock()
        defer { s.lock.unlock() }
        if let r = s.current, s.used + n <= r.byteCount {
            let p = r.base + s.used
            s.used += n
            p.initializeMemory(as: UInt8.self, repeating: 0, count: n)
            return (r, p)
        }
        let r = HugePageRegion(byteCount: regionBytes)
        s.current = r
        s.used = n
        r.base.initializeMemory(as: UInt8.self, repeating: 0, count: n)
        return (r, r.base)
    }
}
