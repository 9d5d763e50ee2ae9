import Foundation
import XCTest
@testable import Pagoda

private struct Rng {
    var s: UInt64
    mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 11 }
    mutating func float() -> Float { Float(next() % 2_000_001) / 1_000_000 - 1 }  // [-1, 1]
}

private final class RawBuffer {
    let p: UnsafeMutableRawPointer
    init(_ n: Int) { p = .allocate(byteCount: n, alignment: 64) }
    deinit { p.deallocate() }
}

private func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

/// Tests for the kernels of the fused forward pass: grouped paged attention, RoPE tables, multi-matrix GEMM.
final class FusedKernelTests: XCTestCase {
    /// Plain softmax attention in Double over a contiguous K/V copy.
    private func referenceAttention(q: [Float], keys: [[Float]], values: [[Float]], headDim: Int) -> [Float] {
        let scale = 1 / Double(headDim).squareRoot()
        let s = keys.map { k in zip(q, k).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } * scale }
        let m = s.max()!
        let e = s.map { exp($0 - m) }
        let z = e.reduce(0, +)
        var o = [Double](repeating: 0, count: headDim)
        for (j, v) in values.enumerated() { for d in 0..<headDim { o[d] += e[j] / z * Double(v[d]) } }
        return o.map { Float($0) }
    }

    private func runAttention(q: [Float], kv: LayerKV, sequences: [AttentionSequence], tokens: Int, heads: Int,
                              kvHeads: Int, headDim: Int, blockSize: Int, threads: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: tokens * heads * headDim)
        let pool = ThreadPool(threadCount: threads)
        q.withUnsafeBufferPointer { qp in
            out.withUnsafeMutableBufferPointer { op in
                pagedAttention(q: qp.baseAddress!, out: op.baseAddress!, kv: kv, sequences: sequences, heads: heads,
                               kvHeads: kvHeads, headDim: headDim, blockSize: blockSize, pool: pool)
            }
        }
        return out
    }

    func testPagedAttentionMatchesReferenceAndIsBatchInvariant() {
        var rng = Rng(s: 42)
        for dtype in KVCacheDType.allCases {
        for (heads, kvHeads, headDim, blockSize) in [(9, 3, 64, 16), (6, 2, 80, 5), (4, 1, 24, 7), (3, 3, 5, 4), (8, 2, 128, 16), (4, 2, 22, 32), (2, 1, 7, 16), (6, 2, 32, 32), (4, 4, 48, 16), (6, 2, 64, 272)]
        where dtype.supports(headDim: headDim, blockSize: blockSize) {
            // Context per sequence; each sequence has `length` new tokens (prefill). 300 spans two softmax
            // partitions, so a token alone (few work items) takes the split-and-merge path. Blocks of 272 make
            // partitions longer than the u8 value pass's 256-key window.
            let lengths = headDim >= 64 ? [1, 17, 33, 300] : [1, 17, 33]
            let rowStride = kvHeads * headDim
            let blocksPer = lengths.map { ($0 + blockSize - 1) / blockSize }
            let blockCount = blocksPer.reduce(0, +)
            // The cache is filled through `store`, which rounds to the cache type; the reference reads back the
            // stored elements.
            let keys = RawBuffer(blockCount * kvHeads * dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: true))
            let values = RawBuffer(blockCount * kvHeads * dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: false))
            let kv = LayerKV(keys: keys.p, values: values.p, dtype: dtype)
            for row in 0..<blockCount * blockSize {
                // Keys with a per-dimension offset (as RoPE'd keys have): u8 quantizes each 16 dimensions alone.
                let k = (0..<rowStride).map { rng.float() * 3 + Float($0 % headDim % 5) }
                let v = (0..<rowStride).map { _ in rng.float() }
                kv.store(row: row, keys: k, values: v, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
            }
            // Blocks handed out in reverse order, to exercise the block table.
            var next = blockCount
            var sequences: [AttentionSequence] = []
            var tokenStart = 0
            for (si, len) in lengths.enumerated() {
                let table = (0..<blocksPer[si]).map { _ in next -= 1; return Int32(next) }
                sequences.append(AttentionSequence(tokenStart: tokenStart, tokenCount: len, startPosition: 0, blockTable: table))
                tokenStart += len
            }
            let tokens = tokenStart
            let q = (0..<tokens * heads * headDim).map { _ in rng.float() }
            let batched = runAttention(q: q, kv: kv, sequences: sequences, tokens: tokens, heads: heads, kvHeads: kvHeads,
                                       headDim: headDim, blockSize: blockSize, threads: 2)
            if dtype == .u8 {
                // The u8 kernels' integer sums without VNNI (plain C) are the same integers: the same bits.
                QuantizedMatrix.forceISA(0)
                let plain = runAttention(q: q, kv: kv, sequences: sequences, tokens: tokens, heads: heads, kvHeads: kvHeads,
                                         headDim: headDim, blockSize: blockSize, threads: 2)
                QuantizedMatrix.forceISA(-1)
                XCTAssertEqual(bits(plain), bits(batched), "u8 without VNNI: heads \(heads)/\(kvHeads) d \(headDim)")
            }
            let group = heads / kvHeads
            for (si, s) in sequences.enumerated() {
                for t in 0..<s.tokenCount {
                    let ti = s.tokenStart + t
                    // Alone: one new token at its position, as decode runs it (one work item per head).
                    let alone = runAttention(q: Array(q[ti * heads * headDim..<(ti + 1) * heads * headDim]), kv: kv,
                                             sequences: [AttentionSequence(tokenStart: 0, tokenCount: 1, startPosition: t,
                                                                           blockTable: s.blockTable)],
                                             tokens: 1, heads: heads, kvHeads: kvHeads, headDim: headDim,
                                             blockSize: blockSize, threads: 3)
                    XCTAssertEqual(bits(alone), bits(Array(batched[ti * heads * headDim..<(ti + 1) * heads * headDim])),
                                   "\(dtype) heads \(heads)/\(kvHeads) d \(headDim) seq \(si) token \(t)")
                    for h in 0..<heads {
                        let kvh = h / group
                        func cacheRow(_ p: Int) -> Int { Int(s.blockTable[p / blockSize]) * blockSize + p % blockSize }
                        func row(_ p: Int, keys: Bool) -> [Float] {
                            (0..<headDim).map { kv.element(keys: keys, row: cacheRow(p), head: kvh, dim: $0, kvHeads: kvHeads,
                                                           headDim: headDim, blockSize: blockSize) }
                        }
                        let ref = referenceAttention(q: Array(q[(ti * heads + h) * headDim..<(ti * heads + h + 1) * headDim]),
                                                     keys: (0...t).map { row($0, keys: true) },
                                                     values: (0...t).map { row($0, keys: false) }, headDim: headDim)
                        for d in 0..<headDim {
                            // u8 scores are taken as scale·Σq·code + min·Σq with queries as int16 steps of
                            // 1/32767 of each group's largest, and the values weighted by int16 steps (a power of two
                            // per 16 keys, at least 2^14 steps for their largest weight): errors up to ~1e-4 here,
                            // far below the cache's own rounding (1/255 of each group's range).
                            XCTAssertEqual(batched[(ti * heads + h) * headDim + d], ref[d], accuracy: dtype == .u8 ? 2e-4 : 1e-5,
                                           "\(dtype) heads \(heads)/\(kvHeads) d \(headDim) seq \(si) token \(t) head \(h)")
                        }
                    }
                }
            }
        }
        }
    }

    /// The u8 cache stores each key's 16-dimension groups and each value row as codes with an fp16 scale and
    /// minimum: every element read back is within half a step (plus the fp16 rounding of the minimum) of what
    /// was stored, constant groups are exact, and the extremes of each group are its first and last codes.
    func testU8CacheRoundTrip() {
        var rng = Rng(s: 11)
        let kvHeads = 2, headDim = 32, blockSize = 16, blocks = 2
        let dtype = KVCacheDType.u8
        let keys = RawBuffer(blocks * kvHeads * dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: true))
        let values = RawBuffer(blocks * kvHeads * dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: false))
        let kv = LayerKV(keys: keys.p, values: values.p, dtype: dtype)
        var stored: [[Float]] = []
        for row in 0..<blocks * blockSize {
            var k = (0..<kvHeads * headDim).map { _ in rng.float() * Float(1 + row % 7) }
            if row == 5 { for i in 0..<16 { k[16 + i] = 0.375 } }   // one constant group
            kv.store(row: row, keys: k, values: k.map { $0 * 2 }, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
            stored.append(k)
        }
        for row in 0..<blocks * blockSize {
            for h in 0..<kvHeads {
                for (isKey, width) in [(true, 16), (false, headDim)] {
                    for g0 in stride(from: 0, to: headDim, by: width) {
                        let x = (g0..<g0 + width).map { stored[row][h * headDim + $0] * (isKey ? 1 : 2) }
                        let lo = x.min()!, hi = x.max()!
                        let step = Float(Float16((hi - lo) / 255))
                        let got = (g0..<g0 + width).map {
                            kv.element(keys: isKey, row: row, head: h, dim: $0, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
                        }
                        let zErr = abs(Float(Float16(lo)) - lo)
                        for i in 0..<width {
                            XCTAssertEqual(got[i], x[i], accuracy: step * 0.5001 + zErr + 1e-6, "row \(row) head \(h) keys \(isKey) dim \(g0 + i)")
                        }
                        if hi == lo { XCTAssertEqual(got, x.map { Float(Float16($0)) }, "constant group row \(row)") }
                    }
                }
            }
        }
    }

    func testRopeTablesEqualPerCallRope() {
        var rng = Rng(s: 7)
        for style in [RopeStyle.neox, RopeStyle.interleaved] {
            let heads = 5, headDim = 24, tokens = 11
            let half = headDim / 2
            let invFreq = (0..<half).map { Float(pow(10000.0, -2.0 * Double($0) / Double(headDim))) }
            let positions = (0..<tokens).map { Int32($0 * 37 % 200) }
            let x = (0..<tokens * heads * headDim).map { _ in rng.float() }
            var a = x, b = x
            var cosT = [Float](repeating: 0, count: tokens * half), sinT = cosT
            positions.withUnsafeBufferPointer { p in
                invFreq.withUnsafeBufferPointer { f in
                    applyRope(&a, tokens: tokens, heads: heads, headDim: headDim, stride: heads * headDim,
                              positions: p.baseAddress!, invFreq: f.baseAddress!, style: style)
                    ropeTables(positions: p.baseAddress!, tokens: tokens, invFreq: f.baseAddress!, half: half,
                               cos: &cosT, sin: &sinT)
                }
            }
            applyRope(&b, tokens: tokens, heads: heads, headDim: headDim, stride: heads * headDim, cos: cosT, sin: sinT, style: style)
            XCTAssertEqual(bits(a), bits(b), "\(style)")
        }
    }

    func testMultiplyManyEqualsMultiply() throws {
        var rng = Rng(s: 3)
        let cols = 96
        // Q8_0 rows with random fp16 scales; 40 rows = 3 groups, the last one partial.
        func tensor(rows: Int) -> Tensor {
            let n = rows * cols / 32 * 34
            let buf = RawBuffer(n)
            let p = buf.p
            for b in 0..<rows * cols / 32 {
                p.storeBytes(of: Float16(0.01 + 0.02 * abs(rng.float())).bitPattern, toByteOffset: b * 34, as: UInt16.self)
                for j in 0..<32 { p.storeBytes(of: UInt8(truncatingIfNeeded: rng.next()), toByteOffset: b * 34 + 2 + j, as: UInt8.self) }
            }
            return Tensor(name: "w", dtype: .q8_0, shape: [rows, cols], data: UnsafeRawPointer(p), owner: buf)
        }
        let m1 = try QuantizedMatrix(tensor(rows: 40))
        let m2 = try QuantizedMatrix(tensor(rows: 23))
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threadCount: threads)
            for tokens in [1, 5] {
                let x = (0..<tokens * cols).map { _ in rng.float() }
                let bias = (0..<40).map { _ in rng.float() }
                var y1 = [Float](repeating: 0, count: tokens * 40), y2 = [Float](repeating: 0, count: tokens * 23)
                var r1 = y1, r2 = y2
                x.withUnsafeBufferPointer { xp in
                    bias.withUnsafeBufferPointer { bp in
                        m1.multiply(x: xp.baseAddress!, tokens: tokens, y: &r1, bias: bp.baseAddress!, pool: pool)
                        m2.multiply(x: xp.baseAddress!, tokens: tokens, y: &r2, bias: nil, pool: pool)
                        let qa = QuantizedActivations()
                        qa.quantize(xp.baseAddress!, tokens: tokens, cols: cols, pool: pool)
                        let lock = NSLock()
                        nonisolated(unsafe) var seen: [Range<Int>] = []
                        y1.withUnsafeMutableBufferPointer { y1p in
                            y2.withUnsafeMutableBufferPointer { y2p in
                                // Without an epilogue: the groups of both matrices split together.
                                QuantizedMatrix.multiplyMany([.init(m1, y: y1p.baseAddress!, bias: bp.baseAddress!),
                                                              .init(m2, y: y2p.baseAddress!)], activations: qa, pool: pool)
                            }
                        }
                        XCTAssertEqual(bits(y1), bits(r1), "threads \(threads) tokens \(tokens)")
                        XCTAssertEqual(bits(y2), bits(r2), "threads \(threads) tokens \(tokens)")
                        // With an epilogue (equal row counts): every row range exactly once.
                        y1 = [Float](repeating: 0, count: tokens * 40)
                        var y3 = y1
                        y1.withUnsafeMutableBufferPointer { y1p in
                            y3.withUnsafeMutableBufferPointer { y3p in
                                QuantizedMatrix.multiplyMany([.init(m1, y: y1p.baseAddress!, bias: bp.baseAddress!),
                                                              .init(m1, y: y3p.baseAddress!)], activations: qa, pool: pool) { rows in
                                    lock.lock(); seen.append(rows); lock.unlock()
                                }
                            }
                        }
                        XCTAssertEqual(bits(y1), bits(r1), "epilogue threads \(threads) tokens \(tokens)")
                        // The epilogue's row ranges cover every row exactly once, in order.
                        XCTAssertEqual(seen.sorted { $0.lowerBound < $1.lowerBound }.flatMap { Array($0) }, Array(0..<40))
                    }
                }
            }
        }
    }

    func testThreadPoolRunsEveryChunkOnce() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threadCount: threads)
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: 64)
            defer { counts.deallocate() }
            let lock = NSLock()
            for round in 0..<2_000 {
                let chunks = round % 9
                counts.initialize(repeating: 0, count: 64)
                pool.forEachChunk(chunks) { c in
                    if round % 500 == 0 { usleep(200) }  // a slow chunk now and then
                    lock.lock(); counts[c] += 1; lock.unlock()
                }
                for c in 0..<64 { XCTAssertEqual(counts[c], c < chunks ? 1 : 0, "threads \(threads) round \(round) chunk \(c)") }
                // parallelFor covers 0..<n exactly once.
                let n = round % 37
                counts.initialize(repeating: 0, count: 64)
                pool.parallelFor(n) { r in lock.lock(); for i in r { counts[i] += 1 }; lock.unlock() }
                for i in 0..<64 { XCTAssertEqual(counts[i], i < n ? 1 : 0) }
            }
        }
    }

    func testExpSIMDIsAccurate() {
        var worst: Double = 0
        var x: Float = -80  // below about −87.3 results are subnormal (and flushed to 0 below −87)
        while x <= 88 {
            let v = SIMD16<Float>((0..<16).map { x + Float($0) * 0.000_37 })
            let e = expSIMD(v)
            for l in 0..<16 {
                let ref = Foundation.exp(Double(v[l]))
                worst = max(worst, abs(Double(e[l]) - ref) / ref)
                XCTAssertEqual(expScalar(v[l]).bitPattern, e[l].bitPattern)
            }
            x += 0.0173
        }
        XCTAssertLessThan(worst, 4e-7)  // a few ulp
        XCTAssertEqual(expScalar(-100), 0)
        XCTAssertEqual(expScalar(-.infinity), 0)
        XCTAssertEqual(expScalar(0), 1)
        // silu·up: vector body and scalar tail agree with the plain formula within a few ulp.
        var rng = Rng(s: 11)
        let n = 37
        let g = (0..<n).map { _ in rng.float() * 20 }, u = (0..<n).map { _ in rng.float() }
        var out = [Float](repeating: 0, count: n)
        siluMul(g, u, &out, count: n)
        for i in 0..<n {
            let ref = Double(g[i]) / (1 + Foundation.exp(-Double(g[i]))) * Double(u[i])
            XCTAssertEqual(Double(out[i]), ref, accuracy: 1e-6 * max(1, abs(ref)))
        }
    }

    func testKeyStoreLayout() {
        let kvHeads = 2, headDim = 6, blockSize = 4, blocks = 3
        let n = blocks * blockSize * kvHeads * headDim
        for dtype in [KVCacheDType.f32, .f16] {
            let keys = UnsafeMutableRawPointer.allocate(byteCount: n * dtype.bytes, alignment: 64)
            let values = UnsafeMutableRawPointer.allocate(byteCount: n * dtype.bytes, alignment: 64)
            defer { keys.deallocate(); values.deallocate() }
            let kv = LayerKV(keys: keys, values: values, dtype: dtype)
            for row in 0..<blocks * blockSize {
                // Integers below 2048: exact in fp16 too.
                let k = (0..<kvHeads * headDim).map { Float(row * 100 + $0) }
                kv.store(row: row, keys: k, values: k, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
            }
            var seen = Set<Int>(), seenValues = Set<Int>()
            for row in 0..<blocks * blockSize {
                for h in 0..<kvHeads {
                    for d in 0..<headDim {
                        let i = LayerKV.keyIndex(row: row, head: h, dim: d, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
                        XCTAssertEqual(kv.key(at: i), Float(row * 100 + h * headDim + d), "\(dtype)")
                        let v = LayerKV.valueIndex(row: row, head: h, dim: d, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize)
                        XCTAssertEqual(kv.value(at: v), Float(row * 100 + h * headDim + d))
                        XCTAssertEqual(v / (blockSize * kvHeads * headDim), row / blockSize)
                        seenValues.insert(v)
                        // Each block's keys stay inside the block's range.
                        XCTAssertEqual(i / (blockSize * kvHeads * headDim), row / blockSize)
                        seen.insert(i)
                    }
                }
            }
            XCTAssertEqual(seen.count, n)
            XCTAssertEqual(seenValues.count, n)
        }
    }
}
