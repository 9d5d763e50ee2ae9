import Foundation
import XCTest
@testable import Pagoda
import PagodaKernelsC

/// A random GGML tensor of `dtype` with sane fp16 scales (see `Tensor.random`).
private func randomTensor(_ t: DType, rows: Int, cols: Int, seed: UInt64) -> Tensor {
    Tensor.random(t, rows: rows, cols: cols, seed: seed)
}

private let detectedISA: Int = {
    QuantizedMatrix.forceISA(-1)
    return QuantizedMatrix.isa
}()

private func randomActivations(_ n: Int, seed: UInt64) -> [Float] {
    Tensor.randomActivations(n, seed: seed)
}

final class QuantizedMatrixTests: XCTestCase {
    let pool = ThreadPool(threadCount: 2)

    func run(_ m: QuantizedMatrix, _ x: [Float], tokens: Int, bias: [Float]? = nil) -> [Float] {
        multiplyForTest(rows: m.rows, x: x, tokens: tokens, bias: bias) {
            m.multiply(x: $0, tokens: tokens, y: $1, bias: $2, pool: pool)
        }
    }

    /// Checks one configuration against the double-precision references; returns the results per ISA.
    func check(_ t: DType, rows: Int, cols: Int, tokens: Int, seed: UInt64, withBias: Bool = false) throws {
        let tensor = randomTensor(t, rows: rows, cols: cols, seed: seed)
        let w = tensor.toFloats()
        let m = try QuantizedMatrix(tensor)
        let x = randomActivations(tokens * cols, seed: seed &+ 99)
        let bias: [Float]? = withBias ? randomActivations(rows, seed: seed &+ 7) : nil
        let a = QuantizedActivations()
        x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, tokens: tokens, cols: cols, pool: pool) }
        let nb = cols / 32

        var results: [[Float]] = []
        for isa in 0...detectedISA {
            QuantizedMatrix.forceISA(isa)
            results.append(run(m, x, tokens: tokens, bias: bias))
        }
        QuantizedMatrix.forceISA(-1)
        XCTAssertEqual(results.count, detectedISA + 1)
        for r in results.dropFirst() {
            XCTAssertEqual(r.map(\.bitPattern), results[0].map(\.bitPattern), "\(t) \(rows)x\(cols) T=\(tokens): ISA paths differ")
        }
        let y = results.last!
        for tk in 0..<tokens {
            for r in 0..<rows {
                var ref = 0.0, mag = 0.0, full = 0.0, bound = 0.0
                for b in 0..<nb {
                    let dx = Double(a.dx[tk * nb + b])
                    var absW = 0.0
                    for j in b * 32..<(b + 1) * 32 {
                        let wv = Double(w[r * cols + j])
                        let xq = Double(a.q[tk * cols + j]) * dx
                        ref += wv * xq
                        mag += abs(wv * xq)
                        full += wv * Double(x[tk * cols + j])
                        absW += abs(wv)
                    }
                    bound += absW * dx / 2  // |x − dx·q| ≤ dx/2 per element (0 for the exact outliers)
                }
                // The row's exact outliers (counted as 0 in their blocks above).
                let k = QuantizedActivations.outliersPerRow
                for o in 0..<k {
                    let c = Int(a.outlierColumns[tk * k + o]), v = Double(a.outlierValues[tk * k + o])
                    XCTAssertEqual(a.q[tk * cols + c], 0, "outlier column \(c) is not 0 in its block")
                    ref += Double(w[r * cols + c]) * v
                    mag += abs(Double(w[r * cols + c]) * v)
                }
                let b = bias.map { Double($0[r]) } ?? 0
                let got = Double(y[tk * rows + r])
                XCTAssertLessThanOrEqual(abs(got - (ref + b)), 1e-5 * mag + 1e-6 * abs(b) + 1e-30,
                                         "\(t) \(rows)x\(cols) T=\(tokens) t=\(tk) r=\(r): \(got) vs int8 reference \(ref + b)")
                XCTAssertLessThanOrEqual(abs(got - (full + b)), bound * 1.001 + 1e-5 * mag + 1e-6 * abs(b) + 1e-6,
                                         "\(t) \(rows)x\(cols) T=\(tokens) t=\(tk) r=\(r): \(got) vs fp32 \(full + b)")
                if abs(got - (ref + b)) > 1e-5 * mag + 1e-6 * abs(b) + 1e-30 { return }
            }
        }
    }

    func testQuantKernelsMatchReference() throws {
        print("QuantizedMatrix ISA: \(QuantizedMatrix.isa)")
        var seed: UInt64 = 1
        for t in [DType.q4_0, .q4_1, .q8_0, .q5_0, .q5_1] {
            for (rows, cols) in [(1, 32), (3, 96), (7, 576), (33, 64), (16, 1536), (40, 160)] {
                for tokens in [1, 2, 3, 5, 13, 17, 64] where rows * cols * tokens <= 1_600_000 {
                    seed += 1
                    try check(t, rows: rows, cols: cols, tokens: tokens, seed: seed, withBias: tokens == 3)
                }
            }
        }
        for t in [DType.q4_K, .q5_K, .q6_K] {
            for (rows, cols) in [(1, 256), (7, 512), (33, 256), (16, 1536)] {
                for tokens in [1, 5, 17] {
                    seed += 1
                    try check(t, rows: rows, cols: cols, tokens: tokens, seed: seed, withBias: tokens == 5)
                }
            }
        }
    }

    func testQuantBatchInvariance() throws {
        for t in [DType.q4_0, .q4_1, .q8_0, .q5_1, .q4_K, .q5_K, .q6_K] {
            // Two passes of the kernel's token chunks, the second a ragged tail.
            let rows = 37, cols = 512, tokens = Int(PAGODA_Q_TOKEN_CHUNK) + 5
            let m = try QuantizedMatrix(randomTensor(t, rows: rows, cols: cols, seed: 5))
            let x = randomActivations(tokens * cols, seed: 6)
            for isa in 0...detectedISA {
                QuantizedMatrix.forceISA(isa)
                let batch = run(m, x, tokens: tokens)
                for tk in 0..<tokens {
                    let one = run(m, Array(x[tk * cols..<(tk + 1) * cols]), tokens: 1)
                    XCTAssertEqual(Array(batch[tk * rows..<(tk + 1) * rows]).map(\.bitPattern), one.map(\.bitPattern),
                                   "\(t) isa \(isa): token \(tk) of a \(tokens)-token batch differs from its GEMV")
                }
                // and inside batches of other sizes
                for n in [2, 3, 4, 5, 8] {
                    let b = run(m, Array(x[0..<n * cols]), tokens: n)
                    XCTAssertEqual(Array(b[0..<n * rows]).map(\.bitPattern), Array(batch[0..<n * rows]).map(\.bitPattern))
                }
            }
            QuantizedMatrix.forceISA(-1)
        }
    }

    /// The wide product (prompt rows: bf16 activations × weights dequantized to bf16, AMX-BF16 tiles): each output
    /// close to a double-precision product of the bf16-rounded operands, and bitwise the same for a token alone, in any batch and
    /// next to int8 rows in one call (the int8 rows unchanged by the wide ones).
    func testWideProductMatchesReferenceAndIsBatchInvariant() throws {
        guard QuantizedMatrix.wideAvailable else { throw XCTSkip("no AMX-BF16 here: every row takes the int8 kernels") }
        func bf16(_ v: Float) -> Double {
            var out: UInt16 = 0
            withUnsafePointer(to: v) { pagoda_to_bf16($0, 1, &out) }
            return Double(Float(bitPattern: UInt32(out) << 16))
        }
        var seed: UInt64 = 900
        for t in [DType.q4_0, .q4_1, .q8_0, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K] {
            for (rows, cols, tokens) in [(7, 256, 1), (33, 512, 17), (40, 256, 37), (16, 1536, 20)] {
                seed += 1
                let tensor = randomTensor(t, rows: rows, cols: cols, seed: seed)
                let m = try QuantizedMatrix(tensor)
                let w = tensor.toFloats()
                let x = randomActivations(tokens * cols, seed: seed &+ 5)
                let bias = randomActivations(rows, seed: seed &+ 6)
                func wide(_ x: [Float], tokens: Int, wideRows: Int) -> [Float] {
                    let a = QuantizedActivations()
                    x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, tokens: tokens, cols: cols, wideRows: wideRows, pool: pool) }
                    return multiplyForTest(rows: rows, x: x, tokens: tokens, bias: bias) { _, y, b in
                        m.multiply(activations: a, y: y, bias: b, pool: pool)
                    }
                }
                let y = wide(x, tokens: tokens, wideRows: tokens)
                for tk in 0..<tokens {
                    for r in 0..<rows {
                        var ref = Double(bias[r]), mag = abs(Double(bias[r]))
                        for c in 0..<cols {
                            // The file's weight as dequantized (fp32), rounded to bf16 like the activation.
                            let p = bf16(w[r * cols + c]) * bf16(x[tk * cols + c])
                            ref += p
                            mag += abs(p)
                        }
                        // fp32 accumulation, and a rare weight whose fp32 dequantization rounds the other way
                        // here and so lands on the neighbouring bf16 value (2⁻⁸ of one product).
                        XCTAssertEqual(Double(y[tk * rows + r]), ref, accuracy: 5e-5 * mag + 1e-6,
                                       "\(t) \(rows)x\(cols) token \(tk) row \(r)")
                    }
                    let one = wide(Array(x[tk * cols..<(tk + 1) * cols]), tokens: 1, wideRows: 1)
                    XCTAssertEqual(one.map(\.bitPattern), Array(y[tk * rows..<(tk + 1) * rows]).map(\.bitPattern),
                                   "\(t) \(rows)x\(cols): token \(tk) alone differs from the batch")
                }
                // Wide rows first, int8 rows after, in one call: each part as in a call of its own.
                let split = tokens / 2
                let mixed = wide(x, tokens: tokens, wideRows: split)
                XCTAssertEqual(Array(mixed[0..<split * rows]).map(\.bitPattern), Array(y[0..<split * rows]).map(\.bitPattern))
                let narrow = run(m, Array(x[(split * cols)...]), tokens: tokens - split, bias: bias)
                XCTAssertEqual(Array(mixed[(split * rows)...]).map(\.bitPattern), narrow.map(\.bitPattern),
                               "\(t): int8 rows after wide rows differ from an int8 call")
            }
        }
    }

    /// The residual add fused into the product equals the product into scratch then `addInPlace`, bit for bit:
    /// wide rows, int8 rows after them, with and without a bias, a partial last group.
    func testMultiplyAddEqualsProductThenAdd() throws {
        var seed: UInt64 = 1300
        for t in [DType.q4_1, .q8_0, .q6_K] {
            for (rows, cols, tokens, wideRows, withBias) in [(40, 256, 37, 20, true), (16, 512, 33, 33, false),
                                                             (7, 256, 5, 0, true), (64, 1536, 70, 64, false)] {
                seed += 1
                let m = try QuantizedMatrix(randomTensor(t, rows: rows, cols: cols, seed: seed))
                let x = randomActivations(tokens * cols, seed: seed &+ 5)
                let bias: [Float]? = withBias ? randomActivations(rows, seed: seed &+ 6) : nil
                let residual = randomActivations(tokens * rows, seed: seed &+ 7)
                let a = QuantizedActivations()
                let wide = QuantizedMatrix.wideAvailable ? wideRows : 0
                x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, tokens: tokens, cols: cols, wideRows: wide, pool: pool) }
                var y = [Float](repeating: 0, count: tokens * rows), expected = residual
                m.multiply(activations: a, y: &y, bias: bias, pool: pool)
                addInPlace(&expected, y, count: tokens * rows)
                var got = residual, scratch = [Float](repeating: .nan, count: tokens * rows)
                m.multiplyAdd(activations: a, to: &got, scratch: &scratch, bias: bias, pool: pool)
                XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern), "\(t) \(rows)x\(cols) t=\(tokens) wide \(wide)")
            }
        }
    }

    /// SwiGLU equals the two products followed by `siluMul`, bit for bit: prompt rows through the fused wide kernel,
    /// int8 rows after them, gate and up of different types, a partial last group; and the fused C kernel alone
    /// (its tiles, or its portable loop where the wide product is unavailable) against the two wide products.
    func testSwiGLUEqualsProductsThenSiluMul() throws {
        var seed: UInt64 = 1200
        for (tg, tu) in [(DType.q4_1, DType.q4_1), (.q8_0, .q8_0), (.q4_K, .q6_K)] {
            for (rows, cols, tokens, wideRows) in [(40, 256, 37, 20), (16, 512, 33, 33), (7, 256, 5, 0), (48, 1536, 70, 64)] {
                seed += 1
                let gate = try QuantizedMatrix(randomTensor(tg, rows: rows, cols: cols, seed: seed))
                let up = try QuantizedMatrix(randomTensor(tu, rows: rows, cols: cols, seed: seed &+ 100))
                let x = randomActivations(tokens * cols, seed: seed &+ 5)
                let a = QuantizedActivations()
                let wide = QuantizedMatrix.wideAvailable ? wideRows : 0
                x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, tokens: tokens, cols: cols, wideRows: wide, pool: pool) }
                var g = [Float](repeating: 0, count: tokens * rows), u = g, expected = g
                g.withUnsafeMutableBufferPointer { gp in
                    u.withUnsafeMutableBufferPointer { up_ in
                        QuantizedMatrix.multiplyMany([.init(gate, y: gp.baseAddress!), .init(up, y: up_.baseAddress!)],
                                                     activations: a, pool: pool)
                    }
                }
                siluMul(g, u, &expected, count: tokens * rows)
                var out = [Float](repeating: .nan, count: tokens * rows), scratch = out
                QuantizedMatrix.multiplyGLU(gate: gate, up: up, activations: a, out: &out, scratch: &scratch, pool: pool)
                XCTAssertEqual(out.map(\.bitPattern), expected.map(\.bitPattern), "\(tg)/\(tu) \(rows)x\(cols) t=\(tokens) wide \(wide)")

                // The C kernel alone, all rows wide.
                var xb = [UInt16](repeating: 0, count: (tokens + 15) / 16 * 16 * cols)
                pagoda_to_bf16(x, Int64(tokens * cols), &xb)
                var gw = [Float](repeating: 0, count: tokens * rows), uw = gw, fused = gw, ref = gw
                let groups = Int64(gate.groupCount)
                withUnsafePointer(to: gate.desc) { gd in
                    withUnsafePointer(to: up.desc) { ud in
                        pagoda_qgemm_wide(gd, xb, Int64(tokens), &gw, Int64(rows), 0, groups, nil, 0)
                        pagoda_qgemm_wide(ud, xb, Int64(tokens), &uw, Int64(rows), 0, groups, nil, 0)
                        // Two calls over parts of the groups, as threads take them.
                        pagoda_qgemm_wide_glu(gd, ud, xb, Int64(tokens), &fused, Int64(rows), 0, groups / 2)
                        pagoda_qgemm_wide_glu(gd, ud, xb, Int64(tokens), &fused, Int64(rows), groups / 2, groups)
                    }
                }
                siluMul(gw, uw, &ref, count: tokens * rows)
                XCTAssertEqual(fused.map(\.bitPattern), ref.map(\.bitPattern), "fused kernel \(tg)/\(tu) \(rows)x\(cols) t=\(tokens)")
            }
        }
    }

    /// The vectorized activation quantizer equals the scalar one bit for bit (values, scales, sums), with
    /// all-zero blocks, ties at .5 and outliers included; rows of 8, 17 and 33 blocks (the vector path works on
    /// groups of 16 blocks, then a part, even or odd).
    func testActivationQuantizationPathsAgree() {
        for cols in [256, 544, 1056] { checkActivationQuantizationPathsAgree(cols: cols) }
    }

    private func checkActivationQuantizationPathsAgree(cols: Int) {
        let tokens = 9
        var x = randomActivations(tokens * cols, seed: 41 + UInt64(cols))
        for j in 0..<32 { x[32 + j] = 0 }                              // an all-zero block
        for j in 0..<32 { x[64 + j] = Float(j - 16) * 127 / 16 / 127 }  // exact multiples: ties after scaling
        x[100] = -1e6
        var outputs: [([Int8], [Float], [Int32], [Float], [Int32], [Int32], [Float])] = []
        let k = QuantizedActivations.outliersPerRow
        for isa in Set([0, detectedISA]).sorted() {
            QuantizedMatrix.forceISA(isa)
            let a = QuantizedActivations()
            x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, tokens: tokens, cols: cols, pool: pool) }
            let nb = tokens * cols / 32
            outputs.append((Array(UnsafeBufferPointer(start: a.q, count: tokens * cols)),
                            Array(UnsafeBufferPointer(start: a.dx, count: nb)),
                            Array(UnsafeBufferPointer(start: a.sx, count: nb)),
                            Array(UnsafeBufferPointer(start: a.dxs, count: nb)),
                            Array(UnsafeBufferPointer(start: a.sxh, count: nb)),
                            Array(UnsafeBufferPointer(start: a.outlierColumns, count: tokens * k)),
                            Array(UnsafeBufferPointer(start: a.outlierValues, count: tokens * k))))
        }
        QuantizedMatrix.forceISA(-1)
        for o in outputs.dropFirst() {
            XCTAssertEqual(o.0, outputs[0].0)
            XCTAssertEqual(o.1.map(\.bitPattern), outputs[0].1.map(\.bitPattern))
            XCTAssertEqual(o.2, outputs[0].2)
            XCTAssertEqual(o.3.map(\.bitPattern), outputs[0].3.map(\.bitPattern))
            XCTAssertEqual(o.4, outputs[0].4)
            XCTAssertEqual(o.5, outputs[0].5)
            XCTAssertEqual(o.6.map(\.bitPattern), outputs[0].6.map(\.bitPattern))
        }
        // Outliers: each row's k largest magnitudes by decreasing magnitude (ties to the lower column), taken
        // out of their blocks.
        let (q0, cols0, vals0) = (outputs[0].0, outputs[0].5, outputs[0].6)
        XCTAssertEqual(cols0[0], 100)
        XCTAssertEqual(vals0[0], -1e6)
        for t in 0..<tokens {
            let row = Array(x[t * cols..<(t + 1) * cols])
            let ranked = row.indices.sorted { abs(row[$0]) > abs(row[$1]) || (abs(row[$0]) == abs(row[$1]) && $0 < $1) }
            XCTAssertEqual(cols0[t * k..<(t + 1) * k].map(Int.init), Array(ranked.prefix(k)), "outliers of token \(t)")
            for c in ranked.prefix(k) { XCTAssertEqual(q0[t * cols + c], 0) }
            XCTAssertEqual(vals0[t * k..<(t + 1) * k].map(\.bitPattern), ranked.prefix(k).map { row[$0].bitPattern })
        }
        // Ties across blocks: equal magnitudes go to the lowest columns.
        var tie = [Float](repeating: 0.5, count: 128)
        tie[70] = -2; tie[5] = 2; tie[120] = 2
        let a = QuantizedActivations()
        tie.withUnsafeBufferPointer { a.quantize($0.baseAddress!, tokens: 1, cols: 128, pool: pool) }
        XCTAssertEqual(Array(UnsafeBufferPointer(start: a.outlierColumns, count: k)), Array([5, 70, 120].prefix(k)))
        // Scalar reference semantics: q = round-half-even(x·127/amax), sx = Σq.
        let q = outputs[0].0
        XCTAssertEqual(Array(q[32..<64]), [Int8](repeating: 0, count: 32))
        XCTAssertEqual(outputs[0].2[0], q[0..<32].reduce(Int32(0)) { $0 + Int32($1) })
        for b in 0..<tokens * cols / 32 {
            XCTAssertEqual(outputs[0].4[b], q[32 * b..<32 * b + 16].reduce(Int32(0)) { $0 + Int32($1) }, "sxh of block \(b)")
        }
    }

    func testQuantUnsupportedTypes() {
        let t = randomTensor(.q4_0, rows: 2, cols: 32, seed: 1)
        let f = Tensor(name: "f", dtype: .f32, shape: [2, 16], data: t.data, owner: t.owner)
        XCTAssertThrowsError(try QuantizedMatrix(f))
    }
}
