import XCTest
@testable import Pagoda

final class WeightMemoryTests: XCTestCase {
    func testAllocationsAreAlignedZeroedDisjointAndKeptAlive() {
        var held: [(HugePageRegion, UnsafeMutableRawPointer, Int)] = []
        // Small ones share regions; one above the shared limit gets its own.
        for n in [1, 100, 4096, 70_000, 1 << 20, WeightMemory.sharedLimit + 1, 3] {
            let (region, p) = WeightMemory.allocate(byteCount: n)
            XCTAssertEqual(Int(bitPattern: p) % 64, 0, "\(n) bytes not 64-byte aligned")
            XCTAssertEqual(Int(bitPattern: region.base) % HugePageRegion.alignment, 0)
            XCTAssertTrue(p >= region.base && p + n <= region.base + region.byteCount, "\(n) bytes outside their region")
            let bytes = UnsafeMutableRawBufferPointer(start: p, count: n)
            XCTAssertTrue(bytes.allSatisfy { $0 == 0 }, "\(n) bytes not zeroed")
            bytes.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: n))
            held.append((region, p, n))
        }
        XCTAssertTrue(held[5].0 !== held[0].0, "a large allocation must not share a region")
        // Small allocations share a region unless the next one just opened a fresh region.
        XCTAssertTrue(held[1].0 === held[0].0 || held[1].1 == held[1].0.base, "small allocations share a region")
        // No two allocations overlap, and each still holds what was written into it.
        for (i, a) in held.enumerated() {
            for b in held[(i + 1)...] {
                XCTAssertTrue(a.1 + a.2 <= b.1 || b.1 + b.2 <= a.1, "allocations of \(a.2) and \(b.2) bytes overlap")
            }
            let bytes = UnsafeRawBufferPointer(start: a.1, count: a.2)
            XCTAssertTrue(bytes.allSatisfy { $0 == UInt8(truncatingIfNeeded: a.2) }, "\(a.2) bytes overwritten")
        }
    }
}
