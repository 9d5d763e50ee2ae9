import Foundation
import XCTest
@testable import Pagoda
import PagodaKernelsC

/// F16 / BF16 weights multiplied in their 16-bit form: against a double-precision reference on the same
/// (rounded) weights, with odd shapes, bias, every code path, and batch invariance.
final class HalfMatrixTests: XCTestCase {
    let pool = ThreadPool(threadCount: 2)

    func testHalfKernelsMatchReferenceAndAreBatchInvariant() throws {
        for dtype in [DType.f16, .bf16] {
            for (rows, cols) in [(37, 53), (16, 64), (9, 576), (1, 7)] {
                let t = Tensor.random(dtype, rows: rows, cols: cols, seed: UInt64(rows * 100 + cols))
                let m = try XCTUnwrap(HalfMatrix(t))
                // Past one token chunk of the kernel with a ragged tail.
                let tokens = Int(PAGODA_H_TOKEN_CHUNK) + 5
                checkMatrixProduct(rows: rows, cols: cols, w: t.toFloats(), x: Tensor.randomActivations(tokens * cols, seed: 3),
                                   tokens: tokens, bias: Tensor.randomActivations(rows, seed: 4), label: "\(dtype)") {
                    m.multiply(x: $0, tokens: $1, y: $2, bias: $3, pool: pool)
                }
            }
        }
        XCTAssertNil(HalfMatrix(Tensor.random(.q8_0, rows: 2, cols: 32, seed: 1)))
    }
}
