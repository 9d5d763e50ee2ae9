import Foundation
import XCTest
@testable import Pagoda
import PagodaKernelsC

/// F16 / BF16 weights multiplied in their 16-bit form: against a double-precision reference on the same
/// (rounded) weights, with odd shapes, bias, every code path, and batch invariance.
final class HalfMatrixTests: XCTestCase {
    let pool = ThreadPool(threadCount: 2)

    private func run(_ m: HalfMatrix, _ x: [Float], tokens: Int, bias: [Float]?) -> [Float] {
        multiplyForTest(rows: m.rows, x: x, tokens: tokens, bias: bias) {
            m.multiply(x: $0, tokens: tokens, y: $1, bias: $2, pool: pool)
        }
    }

    func testHalfKernelsMatchReferenceAndAreBatchInvariant() throws {
        QuantizedMatrix.forceISA(-1)
        let detected = QuantizedMatrix.isa
        for dtype in [DType.f16, .bf16] {
            for (rows, cols) in [(37, 53), (16, 64), (9, 576), (1, 7)] {
                let t = Tensor.random(dtype, rows: rows, cols: cols, seed: UInt64(rows * 100 + cols))
                let w = t.toFloats()
                let m = try XCTUnwrap(HalfMatrix(t))
                // Past one token chunk of the kernel with a ragged tail.
                let tokens = Int(PAGODA_H_TOKEN_CHUNK) + 5
                let x = Tensor.randomActivations(tokens * cols, seed: 3)
                let bias = Tensor.randomActivations(rows, seed: 4)
                for isa in 0...detected {
                    QuantizedMatrix.forceISA(isa)
                    let y = run(m, x, tokens: tokens, bias: bias)
                    for tk in 0..<tokens {
                        for r in 0..<rows {
                            var ref = Double(bias[r]), mag = abs(Double(bias[r]))
                            for k in 0..<cols {
                                ref += Double(w[r * cols + k]) * Double(x[tk * cols + k])
                                mag += abs(Double(w[r * cols + k]) * Double(x[tk * cols + k]))
                            }
                            XCTAssertEqual(Double(y[tk * rows + r]), ref, accuracy: 1e-5 * mag + 1e-7,
                                           "\(dtype) \(rows)x\(cols) isa \(isa) token \(tk) row \(r)")
                        }
                    }
                    // Each token alone gives bitwise what it gives inside the batch (decode and prefill tiles).
                    for tk in 0..<tokens {
                        let one = run(m, Array(x[tk * cols..<(tk + 1) * cols]), tokens: 1, bias: bias)
                        XCTAssertEqual(one.map(\.bitPattern), Array(y[tk * rows..<(tk + 1) * rows]).map(\.bitPattern),
                                       "\(dtype) \(rows)x\(cols) isa \(isa): token \(tk) alone differs")
                    }
                }
                QuantizedMatrix.forceISA(-1)
            }
        }
        XCTAssertNil(HalfMatrix(Tensor.random(.q8_0, rows: 2, cols: 32, seed: 1)))
    }
}
