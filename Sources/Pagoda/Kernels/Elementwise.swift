import Foundation

/// RMSNorm of each of `tokens` rows of length `n`: y = x / sqrt(mean(x²) + eps) · weight.
public func rmsNorm(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                    tokens: Int, n: Int, eps: Float) {
    for t in 0..<tokens {
        let xr = x + t * n, yr = y + t * n
        var acc = SIMD16<Float>()
        var c = 0
        while c + 16 <= n {
            let v = UnsafeRawPointer(xr + c).loadUnaligned(as: SIMD16<Float>.self)
            acc.addProduct(v, v)
            c += 16
        }
        var ss = acc.sum()
        while c < n { ss += xr[c] * xr[c]; c += 1 }
        let scale = 1 / (ss / Float(n) + eps).squareRoot()
        for i in 0..<n { yr[i] = xr[i] * scale * weight[i] }
    }
}

/// x += y, elementwise.
public func addInPlace(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { x[i] += y[i] }
}

/// Rotary position embedding, in place, for `heads` heads of `headDim` per token.
/// `invFreq` has headDim/2 entries.
public func applyRope(_ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, stride: Int,
                      positions: UnsafePointer<Int32>, invFreq: UnsafePointer<Float>, style: RopeStyle) {
    let half = headDim / 2
    for t in 0..<tokens {
        let pos = Float(positions[t])
        for i in 0..<half {
            let angle = pos * invFreq[i]
            let c = cos(angle), s = sin(angle)
            for h in 0..<heads {
                let v = x + t * stride + h * headDim
                let (a, b) = style == .neox ? (i, i + half) : (2 * i, 2 * i + 1)
                let x0 = v[a], x1 = v[b]
                v[a] = x0 * c - x1 * s
                v[b] = x0 * s + x1 * c
            }
        }
    }
}

/// cos/sin tables for `applyRope(_:tokens:heads:headDim:stride:cos:sin:style:)`: entry t·half + i holds
/// cos(positions[t]·invFreq[i]) (and sin), computed exactly as the per-call version computes them.
public func ropeTables(positions: UnsafePointer<Int32>, tokens: Int, invFreq: UnsafePointer<Float>, half: Int,
                       cos cosOut: UnsafeMutablePointer<Float>, sin sinOut: UnsafeMutablePointer<Float>) {
    for t in 0..<tokens {
        let pos = Float(positions[t])
        for i in 0..<half {
            let angle = pos * invFreq[i]
            cosOut[t * half + i] = cos(angle)
            sinOut[t * half + i] = sin(angle)
        }
    }
}

/// Rotary position embedding, in place, with precomputed per-token tables (see `ropeTables`); bitwise equal
/// to the per-call version.
public func applyRope(_ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, stride: Int,
                      cos cosTab: UnsafePointer<Float>, sin sinTab: UnsafePointer<Float>, style: RopeStyle) {
    let half = headDim / 2
    for t in 0..<tokens {
        let ct = cosTab + t * half, st = sinTab + t * half
        for h in 0..<heads {
            let v = x + t * stride + h * headDim
            if style == .neox {
                for i in 0..<half {
                    let c = ct[i], s = st[i]
                    let x0 = v[i], x1 = v[i + half]
                    v[i] = x0 * c - x1 * s
                    v[i + half] = x0 * s + x1 * c
                }
            } else {
                for i in 0..<half {
                    let c = ct[i], s = st[i]
                    let x0 = v[2 * i], x1 = v[2 * i + 1]
                    v[2 * i] = x0 * c - x1 * s
                    v[2 * i + 1] = x0 * s + x1 * c
                }
            }
        }
    }
}

/// e^x for 16 lanes: Cephes-style range reduction (x = n·ln2 + r, |r| ≤ ln2/2) and a degree-6 polynomial,
/// within a few ulp of expf over [-87, 88]; 0 below −87, and inputs above 88 are clamped to 88. The same
/// operations on every lane, so a result depends only on its input value.
@inline(__always) public func expSIMD(_ x0: SIMD16<Float>) -> SIMD16<Float> {
    typealias V = SIMD16<Float>
    var x = x0
    x.replace(with: 88, where: x0 .> 88)
    x.replace(with: -87, where: .!(x0 .>= -87))  // also maps NaN to −87 (then 0)
    let magic = V(repeating: 12_582_912)  // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
    let t = magic.addingProduct(x, V(repeating: 1.442_695_04))
    let n = t - magic
    var r = x.addingProduct(n, V(repeating: -0.693_359_375))
    r = r.addingProduct(n, V(repeating: 2.121_944_40e-4))
    var p = V(repeating: 1.987_569_150_0e-4)
    p = V(repeating: 1.398_199_950_7e-3).addingProduct(p, r)
    p = V(repeating: 8.333_451_907_3e-3).addingProduct(p, r)
    p = V(repeating: 4.166_579_589_4e-2).addingProduct(p, r)
    p = V(repeating: 1.666_666_545_9e-1).addingProduct(p, r)
    p = V(repeating: 5.000_000_120_1e-1).addingProduct(p, r)
    let e = r.addingProduct(p, r * r) + V(repeating: 1)
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: V.self)
    var y = e * scale
    y.replace(with: 0, where: .!(x0 .>= -87))
    return y
}

/// `expSIMD` of one value (lane 0 of a splat): the same result as the vector lanes.
@inline(__always) public func expScalar(_ x: Float) -> Float {
    expSIMD(SIMD16<Float>(repeating: x))[0]
}

/// out = silu(gate) · up = gate / (1 + e^−gate) · up, elementwise, with `expSIMD` (each element's result
/// depends only on its inputs, whichever position it has).
public func siluMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                        count: Int) {
    typealias V = SIMD16<Float>
    var i = 0
    while i + 16 <= count {
        let g = UnsafeRawPointer(gate + i).loadUnaligned(as: V.self)
        let u = UnsafeRawPointer(up + i).loadUnaligned(as: V.self)
        let y = g / (V(repeating: 1) + expSIMD(-g)) * u
        UnsafeMutableRawPointer(out + i).storeBytes(of: y, as: V.self)
        i += 16
    }
    while i < count {
        let g = gate[i]
        out[i] = g / (1 + expScalar(-g)) * up[i]
        i += 1
    }
}
