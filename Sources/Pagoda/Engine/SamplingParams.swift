/// How to pick tokens for one request (OpenAI's and vLLM's parameters).
public struct SamplingParams: Sendable, Equatable {
    public var n: Int = 1
    /// 0 means greedy.
    public var temperature: Float = 1
    public var topP: Float = 1
    /// 0 or -1 disables.
    public var topK: Int = 0
    public var minP: Float = 0
    public var repetitionPenalty: Float = 1
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    public var logitBias: [Int: Float] = [:]
    public var seed: UInt64? = nil
    public var maxTokens: Int = 16
    public var minTokens: Int = 0
    public var stop: [String] = []
    public var stopTokenIds: [Int] = []
    public var ignoreEOS = false
    public var includeStopStrInOutput = false
    public var skipSpecialTokens = true
    /// Number of top log-probabilities to return per generated token (nil: none).
    public var logprobs: Int? = nil
    /// Number of top log-probabilities per prompt token (nil: none).
    public var promptLogprobs: Int? = nil

    public init() {}

    public static var greedy: SamplingParams {
        var p = SamplingParams()
        p.temperature = 0
        return p
    }

    public var isGreedy: Bool { temperature <= 1e-5 }

    /// A description of the first invalid field, or nil.
    public func validationError() -> (param: String, message: String)? {
        if n < 1 { return ("n", "n must be at least 1, got \(n)") }
        if n > 128 { return ("n", "n must be at most 128, got \(n)") }
        if temperature < 0 || !temperature.isFinite { return ("temperature", "temperature must be a non-negative number, got \(temperature)") }
        if !(topP > 0 && topP <= 1) { return ("top_p", "top_p must be in (0, 1], got \(topP)") }
        if topK < -1 { return ("top_k", "top_k must be -1 (disabled), 0 (disabled) or positive, got \(topK)") }
        if !(minP >= 0 && minP <= 1) { return ("min_p", "min_p must be in [0, 1], got \(minP)") }
        if !(repetitionPenalty > 0) || !repetitionPenalty.isFinite { return ("repetition_penalty", "repetition_penalty must be positive, got \(repetitionPenalty)") }
        if !(presencePenalty >= -2 && presencePenalty <= 2) { return ("presence_penalty", "presence_penalty must be in [-2, 2], got \(presencePenalty)") }
        if !(frequencyPenalty >= -2 && frequencyPenalty <= 2) { return ("frequency_penalty", "frequency_penalty must be in [-2, 2], got \(frequencyPenalty)") }
        if maxTokens < 1 { return ("max_tokens", "max_tokens must be at least 1, got \(maxTokens)") }
        if minTokens < 0 || minTokens > maxTokens { return ("min_tokens", "min_tokens must be between 0 and max_tokens (\(maxTokens)), got \(minTokens)") }
        if let k = logprobs, k < 0 || k > 20 { return ("logprobs", "logprobs must be between 0 and 20, got \(k)") }
        if let k = promptLogprobs, k < 0 || k > 20 { return ("prompt_logprobs", "prompt_logprobs must be between 0 and 20, got \(k)") }
        for (id, bias) in logitBias where !bias.isFinite || bias < -100 || bias > 100 {
            return ("logit_bias", "logit_bias for token \(id) must be in [-100, 100], got \(bias)")
        }
        if stop.contains(where: \.isEmpty) { return ("stop", "stop strings must not be empty") }
        return nil
    }
}

/// Why a request stopped.
public enum FinishReason: String, Sendable, Equatable {
    case stop
    case length
    case abort
}

/// One token's log-probability and the best alternatives at that position.
public struct TokenLogprob: Sendable, Equatable {
    public var token: Int
    public var logprob: Float
    /// Best `k` (id, logprob), best first.
    public var top: [(Int, Float)]

    public init(token: Int, logprob: Float, top: [(Int, Float)]) {
        self.token = token
        self.logprob = logprob
        self.top = top
    }

    public static func == (a: TokenLogprob, b: TokenLogprob) -> Bool {
        a.token == b.token && a.logprob == b.logprob && a.top.count == b.top.count
            && zip(a.top, b.top).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}
