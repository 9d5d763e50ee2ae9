import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One 2 MiB-aligned allocation that the kernel is asked to back with transparent huge pages. Streaming reads
/// of weights then do not miss the TLB every 4 KiB, and the hardware prefetcher is not stopped at every 4 KiB
/// page boundary. Pages are mapped on first touch, as with any large allocation.
public final class HugePageRegion: @unchecked Sendable {
    public static let alignment = 1 << 21
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int

    public init(byteCount: Int) {
        let a = HugePageRegion.alignment
        let n = max(a, (byteCount + a - 1) / a * a)
        self.byteCount = n
        base = .allocate(byteCount: n, alignment: a)
        #if canImport(Glibc)
        _ = madvise(base, n, MADV_HUGEPAGE)
        #endif
    }

    deinit { base.deallocate() }
}

/// Memory for repacked weights: small matrices are packed 64-byte aligned into shared huge-page regions (a
/// region is freed when the last matrix in it goes); large ones get a region of their own.
public enum WeightMemory {
    /// Size of a shared region.
    static let regionBytes = 32 << 20
    /// The largest allocation placed in a shared region.
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
        let (region, p): (HugePageRegion, UnsafeMutableRawPointer)
        if n > sharedLimit {
            region = HugePageRegion(byteCount: n)
            p = region.base
        } else {
            (region, p) = carve(n)
        }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: n)
        return (region, p)
    }

    /// `n` bytes at the end of the current shared region, or at the start of a new one.
    private static func carve(_ n: Int) -> (HugePageRegion, UnsafeMutableRawPointer) {
        let s = state
        s.lock.lock()
        defer { s.lock.unlock() }
        if let r = s.current, s.used + n <= r.byteCount {
            defer { s.used += n }
            return (r, r.base + s.used)
        }
        let r = HugePageRegion(byteCount: regionBytes)
        s.current = r
        s.used = n
        return (r, r.base)
    }
}
