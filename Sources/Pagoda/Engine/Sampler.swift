import Foundation

/// Turns one sequence's logits into its next token: logit bias, min_tokens, repetition / presence /
/// frequency penalties, then greedy or temperature sampling restricted by top_k, top_p and min_p, drawn
/// from the sequence's own generator (so a seeded request repeats exactly whatever else is in the batch).
/// Log-probabilities are those of the model's raw distribution, as vLLM reports by default.
public struct Sampler {
    public let eosTokenIds: Set<Int>
    private var work: [Float] = []
    private var order: [Int] = []

    public init(eosTokenIds: Set<Int>) { self.eosTokenIds = eosTokenIds }

    public struct Result {
        public var token: Int
        public var logprob: TokenLogprob?
    }

    /// Samples for `request` from `logits` (one row of vocabSize values).
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>, for request: Request, rng: inout Xoshiro256) -> Result {
        let p = request.params
        let v = logits.count
        // Greedy with nothing that changes the logits (the common case of a batch job): the argmax of the row
        // itself, without a copy.
        let adjusts = !p.logitBias.isEmpty || p.repetitionPenalty != 1 || p.presencePenalty != 0
            || p.frequencyPenalty != 0 || request.outputTokenIds.count < p.minTokens
        if (p.isGreedy || p.topK == 1) && !adjusts {
            let token = LogProbs.argmax(logits)
            return Result(token: token, logprob: logprob(of: token, logits, p))
        }
        if work.count != v { work = [Float](repeating: 0, count: v) }
        work.withUnsafeMutableBufferPointer { w in
            _ = w.initialize(from: logits)
            for (id, bias) in p.logitBias where id >= 0 && id < v { w[id] += bias }
            if request.outputTokenIds.count < p.minTokens {
                for id in p.stopTokenIds where id >= 0 && id < v { w[id] = -.infinity }
                if !p.ignoreEOS { for id in eosTokenIds where id < v { w[id] = -.infinity } }
            }
            if p.repetitionPenalty != 1 {
                var seen = Set(request.promptTokenIds)
                seen.formUnion(request.outputTokenIds)
                for id in seen where id >= 0 && id < v {
                    w[id] = w[id] > 0 ? w[id] / p.repetitionPenalty : w[id] * p.repetitionPenalty
                }
            }
            if p.presencePenalty != 0 || p.frequencyPenalty != 0 {
                var counts: [Int: Int] = [:]
                for id in request.outputTokenIds { counts[id, default: 0] += 1 }
                for (id, c) in counts where id >= 0 && id < v {
                    w[id] -= p.frequencyPenalty * Float(c) + p.presencePenalty
                }
            }
        }
        let token: Int
        if p.isGreedy || p.topK == 1 {
            token = work.withUnsafeBufferPointer { LogProbs.argmax($0) }
        } else {
            token = drawToken(p, rng: &rng)
        }
        return Result(token: token, logprob: logprob(of: token, logits, p))
    }

    /// The chosen token's log-probability and the top `logprobs` under the model's raw distribution, if asked for.
    private func logprob(of token: Int, _ logits: UnsafeBufferPointer<Float>, _ p: SamplingParams) -> TokenLogprob? {
        guard let k = p.logprobs else { return nil }
        let raw = Array(logits)
        let lse = LogProbs.logSumExp(raw)
        return TokenLogprob(token: token, logprob: raw[token] - lse, top: LogProbs.top(raw, k: k).map { ($0.id, $0.logprob) })
    }

    /// Temperature, then top_k / top_p / min_p over the sorted candidates, then one draw.
    private mutating func drawToken(_ p: SamplingParams, rng: inout Xoshiro256) -> Int {
        let t = p.temperature
        let v = work.count
        // Candidates: all tokens with a finite logit, best first (partial order is enough for top_k).
        order.removeAll(keepingCapacity: true)
        for i in 0..<v where work[i] > -.infinity { order.append(i) }
        if order.isEmpty { return LogProbs.argmax(work) }
        let w = work
        let k = p.topK > 0 ? min(p.topK, order.count) : order.count
        if k < order.count {
            // Keep the k best (ties: lower id first), then sort them.
            order.sort { w[$0] > w[$1] || (w[$0] == w[$1] && $0 < $1) }
            order.removeLast(order.count - k)
        } else if p.topP < 1 || p.minP > 0 {
            order.sort { w[$0] > w[$1] || (w[$0] == w[$1] && $0 < $1) }
        }
        let maxLogit = order.map { w[$0] }.max()!
        var probs = order.map { Double(expf((w[$0] - maxLogit) / t)) }
        var total = probs.reduce(0, +)
        if p.topP < 1 {
            var cum = 0.0
            var keep = 0
            for pr in probs {
                keep += 1
                cum += pr / total
                if cum >= Double(p.topP) { break }
            }
            probs.removeLast(probs.count - keep)
            order.removeLast(order.count - keep)
            total = probs.reduce(0, +)
        }
        if p.minP > 0 {
            let threshold = Double(p.minP) * (probs.max()! / total)
            var kept: [Int] = [], keptP: [Double] = []
            for (id, pr) in zip(order, probs) where pr / total >= threshold {
                kept.append(id)
                keptP.append(pr)
            }
            order = kept
            probs = keptP
            total = probs.reduce(0, +)
        }
        let u = Double(rng.nextUnit()) * total
        var acc = 0.0
        for (id, pr) in zip(order, probs) {
            acc += pr
            if u < acc { return id }
        }
        return order[order.count - 1]
    }
}
