// fp32 matrix multiplication y[t, r] = Σ_c x[t, c] · w[r, c] (+ bias[r]), for weights stored row-major.
//
// Each output element is one dot product accumulated in a fixed order (16-wide chunks into one SIMD
// accumulator, then the scalar tail, then a horizontal sum), whatever the tile it falls in: the result for
// a token never depends on how many other tokens share the batch.

typealias F16x = SIMD16<Float>

@inline(__always) private func load16(_ p: UnsafePointer<Float>) -> F16x {
    UnsafeRawPointer(p).loadUnaligned(as: F16x.self)
}

/// One output element, in the canonical order.
@inline(__always) private func dot1(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = F16x()
    var c = 0
    while c + 16 <= n {
        acc.addProduct(load16(x + c), load16(w + c))
        c += 16
    }
    var tail: Float = 0
    while c < n {
        tail = tail.addingProduct(x[c], w[c])
        c += 1
    }
    return acc.sum() + tail
}

@inline(__always) private func tailDot(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, from c0: Int, _ n: Int) -> Float {
    var tail: Float = 0
    var c = c0
    while c < n {
        tail = tail.addingProduct(x[c], w[c])
        c += 1
    }
    return tail
}

/// A 4-token × 4-row tile: 16 independent accumulators, each in the canonical order.
@inline(never)
private func tile4x4(_ x: UnsafePointer<Float>, _ ldx: Int, _ w: UnsafePointer<Float>, _ ldw: Int, _ n: Int,
                     _ y: UnsafeMutablePointer<Float>, _ ldy: Int) {
    var a00 = F16x(), a01 = F16x(), a02 = F16x(), a03 = F16x()
    var a10 = F16x(), a11 = F16x(), a12 = F16x(), a13 = F16x()
    var a20 = F16x(), a21 = F16x(), a22 = F16x(), a23 = F16x()
    var a30 = F16x(), a31 = F16x(), a32 = F16x(), a33 = F16x()
    let x0 = x, x1 = x + ldx, x2 = x + 2 * ldx, x3 = x + 3 * ldx
    let w0 = w, w1 = w + ldw, w2 = w + 2 * ldw, w3 = w + 3 * ldw
    var c = 0
    while c + 16 <= n {
        let v0 = load16(w0 + c), v1 = load16(w1 + c), v2 = load16(w2 + c), v3 = load16(w3 + c)
        var u = load16(x0 + c)
        a00.addProduct(u, v0); a01.addProduct(u, v1); a02.addProduct(u, v2); a03.addProduct(u, v3)
        u = load16(x1 + c)
        a10.addProduct(u, v0); a11.addProduct(u, v1); a12.addProduct(u, v2); a13.addProduct(u, v3)
        u = load16(x2 + c)
        a20.addProduct(u, v0); a21.addProduct(u, v1); a22.addProduct(u, v2); a23.addProduct(u, v3)
        u = load16(x3 + c)
        a30.addProduct(u, v0); a31.addProduct(u, v1); a32.addProduct(u, v2); a33.addProduct(u, v3)
        c += 16
    }
    y[0 * ldy + 0] = a00.sum() + tailDot(x0, w0, from: c, n)
    y[0 * ldy + 1] = a01.sum() + tailDot(x0, w1, from: c, n)
    y[0 * ldy + 2] = a02.sum() + tailDot(x0, w2, from: c, n)
    y[0 * ldy + 3] = a03.sum() + tailDot(x0, w3, from: c, n)
    y[1 * ldy + 0] = a10.sum() + tailDot(x1, w0, from: c, n)
    y[1 * ldy + 1] = a11.sum() + tailDot(x1, w1, from: c, n)
    y[1 * ldy + 2] = a12.sum() + tailDot(x1, w2, from: c, n)
    y[1 * ldy + 3] = a13.sum() + tailDot(x1, w3, from: c, n)
    y[2 * ldy + 0] = a20.sum() + tailDot(x2, w0, from: c, n)
    y[2 * ldy + 1] = a21.sum() + tailDot(x2, w1, from: c, n)
    y[2 * ldy + 2] = a22.sum() + tailDot(x2, w2, from: c, n)
    y[2 * ldy + 3] = a23.sum() + tailDot(x2, w3, from: c, n)
    y[3 * ldy + 0] = a30.sum() + tailDot(x3, w0, from: c, n)
    y[3 * ldy + 1] = a31.sum() + tailDot(x3, w1, from: c, n)
    y[3 * ldy + 2] = a32.sum() + tailDot(x3, w2, from: c, n)
    y[3 * ldy + 3] = a33.sum() + tailDot(x3, w3, from: c, n)
}

/// A 1-token × 4-row tile (decode).
@inline(never)
private func tile1x4(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ ldw: Int, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
    var a0 = F16x(), a1 = F16x(), a2 = F16x(), a3 = F16x()
    let w0 = w, w1 = w + ldw, w2 = w + 2 * ldw, w3 = w + 3 * ldw
    var c = 0
    while c + 16 <= n {
        let u = load16(x + c)
        a0.addProduct(u, load16(w0 + c))
        a1.addProduct(u, load16(w1 + c))
        a2.addProduct(u, load16(w2 + c))
        a3.addProduct(u, load16(w3 + c))
        c += 16
    }
    y[0] = a0.sum() + tailDot(x, w0, from: c, n)
    y[1] = a1.sum() + tailDot(x, w1, from: c, n)
    y[2] = a2.sum() + tailDot(x, w2, from: c, n)
    y[3] = a3.sum() + tailDot(x, w3, from: c, n)
}

/// y[tokens, rows] = x[tokens, cols] · w[rows, cols]ᵀ (+ bias), rows split across the pool's threads.
public func matmulF32(x: UnsafePointer<Float>, tokens: Int, w: UnsafePointer<Float>, rows: Int, cols: Int,
                      bias: UnsafePointer<Float>? = nil, y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    let rowBlocks = (rows + 3) / 4
    pool.parallelFor(rowBlocks) { blocks in
        for rb in blocks {
            let r0 = rb * 4
            let nr = min(4, rows - r0)
            var t0 = 0
            if nr == 4 {
                while t0 + 4 <= tokens {
                    tile4x4(x + t0 * cols, cols, w + r0 * cols, cols, cols, y + t0 * rows + r0, rows)
                    t0 += 4
                }
                while t0 < tokens {
                    tile1x4(x + t0 * cols, w + r0 * cols, cols, cols, y + t0 * rows + r0)
                    t0 += 1
                }
            } else {
                for t in 0..<tokens {
                    for r in r0..<r0 + nr { y[t * rows + r] = dot1(x + t * cols, w + r * cols, cols) }
                }
            }
            if let bias {
                for t in 0..<tokens {
                    for r in r0..<r0 + nr { y[t * rows + r] += bias[r] }
                }
            }
        }
    }
}
