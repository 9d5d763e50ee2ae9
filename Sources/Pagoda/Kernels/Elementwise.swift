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

/// out = silu(gate) · up, elementwise.
public func siluMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
        let g = gate[i]
        out[i] = g / (1 + exp(-g)) * up[i]
    }
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
