import Foundation
import XCTest
@testable import Pagoda
import PagodaKernelsC

/// fp32 weights repacked into 8-row groups: against a double-precision reference, with odd shapes, bias, every code
/// path, batch invariance, and row lookups (the tied embedding table reads its rows back from the repacked form).
final class FloatMatrixTests: XCTestCase {
    let pool = ThreadPool(threadCount: 2)

    func testFloatMatrixMatchesReferenceAndIsBatchInvariant() throws {
        for (rows, cols) in [(37, 53), (16, 64), (9, 576), (1, 7), (24, 15)] {
            let w = Tensor.randomActivations(rows * cols, seed: UInt64(rows * 100 + cols))
            let m = w.withUnsafeBufferPointer { FloatMatrix(rows: rows, cols: cols, values: $0.baseAddress!) }
            var row = [Float](repeating: 0, count: cols)
            for r in 0..<rows {
                row.withUnsafeMutableBufferPointer { m.row(r, into: $0.baseAddress!) }
                XCTAssertEqual(row, Array(w[r * cols..<(r + 1) * cols]), "\(rows)x\(cols) row \(r)")
            }
            // Past one token chunk of the kernel with a ragged tail.
            let tokens = Int(PAGODA_H_TOKEN_CHUNK) + 5
            checkMatrixProduct(rows: rows, cols: cols, w: w, x: Tensor.randomActivations(tokens * cols, seed: 3),
                               tokens: tokens, bias: Tensor.randomActivations(rows, seed: 4), label: "f32") {
                m.multiply(x: $0, tokens: $1, y: $2, bias: $3, pool: pool)
            }
        }
    }
}
