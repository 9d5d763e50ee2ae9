import Foundation
import XCTest
@testable import Pagoda
import PagodaKernelsC

/// fp32 weights repacked into 8-row groups: against a double-precision reference, with odd shapes, bias, every code
/// path, batch invariance, and row lookups (the tied embedding table reads its rows back from the repacked form).
final class FloatMatrixTests: XCTestCase {
    let pool = ThreadPool(threadCount: 2)

    func testFloatMatrixMatchesReferenceAndIsBatchInvariant() throws {
        QuantizedMatrix.forceISA(-1)
        let detected = QuantizedMatrix.isa
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
            let x = Tensor.randomActivations(tokens * cols, seed: 3)
            let bias = Tensor.randomActivations(rows, seed: 4)
            for isa in 0...detected {
                QuantizedMatrix.forceISA(isa)
                let y = multiplyForTest(rows: rows, x: x, tokens: tokens, bias: bias) {
                    m.multiply(x: $0, tokens: tokens, y: $1, bias: $2, pool: pool)
                }
                for tk in 0..<tokens {
                    for r in 0..<rows {
                        var ref = Double(bias[r]), mag = abs(Double(bias[r]))
                        for k in 0..<cols {
                            ref += Double(w[r * cols + k]) * Double(x[tk * cols + k])
                            mag += abs(Double(w[r * cols + k]) * Double(x[tk * cols + k]))
                        }
                        XCTAssertEqual(Double(y[tk * rows + r]), ref, accuracy: 1e-5 * mag + 1e-7,
                                       "\(rows)x\(cols) isa \(isa) token \(tk) row \(r)")
                    }
                }
                // Each token alone gives bitwise what it gives inside the batch (decode and prefill tiles).
                for tk in 0..<tokens {
                    let one = multiplyForTest(rows: rows, x: Array(x[tk * cols..<(tk + 1) * cols]), tokens: 1, bias: bias) {
                        m.multiply(x: $0, tokens: 1, y: $1, bias: $2, pool: pool)
                    }
                    XCTAssertEqual(one.map(\.bitPattern), Array(y[tk * rows..<(tk + 1) * rows]).map(\.bitPattern),
                                   "\(rows)x\(cols) isa \(isa): token \(tk) alone differs")
                }
            }
            QuantizedMatrix.forceISA(-1)
        }
    }
}
