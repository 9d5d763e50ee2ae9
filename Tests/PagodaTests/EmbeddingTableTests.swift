import XCTest
@testable import Pagoda

/// The embedding table kept in the file's type gives each looked-up row exactly as the whole-table fp32
/// conversion does.
final class EmbeddingTableTests: XCTestCase {
    func testRowsEqualWholeTableConversion() {
        for (i, t) in [DType.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_1, .q4_K, .q6_K].enumerated() {
            let rows = 37, cols = 512
            let tensor = Tensor.random(t, rows: rows, cols: cols, seed: UInt64(100 + i))
            let all = tensor.toFloats()
            for fp32 in [false, true] {
                let table = EmbeddingTable(tensor, fp32: fp32)
                XCTAssertEqual(table.floats != nil, fp32 || t == .f32, "\(t): fp32 copy kept only when needed")
                var row = [Float](repeating: .nan, count: cols)
                for r in [0, 1, 17, rows - 1] {
                    row.withUnsafeMutableBufferPointer { table.row(r, into: $0.baseAddress!) }
                    XCTAssertEqual(row.map(\.bitPattern), all[r * cols..<(r + 1) * cols].map(\.bitPattern), "\(t) row \(r)")
                }
            }
        }
    }
}
