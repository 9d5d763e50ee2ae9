import Foundation
import Pagoda

/// Typed, tolerant access to a JSON request body that names the offending field on errors.
struct JSONBody {
    let object: JinjaObject

    init(bytes: [UInt8]) throws {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw APIError.invalid("The request body is not valid UTF-8.")
        }
        if text.allSatisfy(\.isWhitespace) { throw APIError.invalid("The request body is empty; expected a JSON object.") }
        let value: JinjaValue
        do { value = try JinjaValue.parseJSON(text) } catch {
            throw APIError.invalid("The request body is not valid JSON: \(error)")
        }
        guard case .object(let o) = value else { throw APIError.invalid("The request body must be a JSON object.") }
        object = o
    }

    /// The value of `key`, nil when absent or null.
    func value(_ key: String) -> JinjaValue? {
        guard let v = object[key] else { return nil }
        if case .none = v { return nil }
        return v
    }

    static func typeName(_ v: JinjaValue) -> String {
        switch v {
        case .none, .undefined, .opaque: return "null"
        case .bool: return "boolean"
        case .int: return "integer"
        case .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    static func wrongType(_ key: String, _ expected: String, _ v: JinjaValue) -> APIError {
        .invalid("'\(key)' must be \(expected), got \(typeName(v)).", param: key, code: "invalid_type")
    }

    func int(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        return try Self.asInt(v, key)
    }

    static func asInt(_ v: JinjaValue, _ key: String) throws -> Int {
        switch v {
        case .int(let i): return i
        case .double(let d) where d == d.rounded() && abs(d) < 9e18: return Int(d)
        default: throw wrongType(key, "an integer", v)
        }
    }

    func double(_ key: String) throws -> Double? {
        guard let v = value(key) else { return nil }
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: throw Self.wrongType(key, "a number", v)
        }
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard case .bool(let b) = v else { throw Self.wrongType(key, "a boolean", v) }
        return b
    }

    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard case .string(let s) = v else { throw Self.wrongType(key, "a string", v) }
        return s
    }

    func stringOrList(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        switch v {
        case .string(let s): return [s]
        case .array(let a):
            return try a.map {
                guard case .string(let s) = $0 else { throw Self.wrongType(key, "a string or a list of strings", v) }
                return s
            }
        default: throw Self.wrongType(key, "a string or a list of strings", v)
        }
    }

    func intList(_ key: String) throws -> [Int]? {
        guard let v = value(key) else { return nil }
        guard case .array(let a) = v else { throw Self.wrongType(key, "a list of integers", v) }
        return try a.map { try Self.asInt($0, key) }
    }
}

/// Request-level options shared by completions and chat completions.
struct GenerationOptions {
    var params = SamplingParams()
    var explicitMaxTokens: Int?
    var stream = false
    var includeUsage = false
    var echo = false
    var returnTokenIds = false
    var priority = 0
    /// Top log-probabilities requested for each output token (nil: none).
    var logprobs: Int?
}

extension JSONBody {
    /// Parses the sampling parameters common to both generation endpoints.
    func generationOptions(chat: Bool, vocabSize: Int) throws -> GenerationOptions {
        var o = GenerationOptions()
        var p = SamplingParams()
        if let n = try int("n") { p.n = n }
        if let t = try double("temperature") { p.temperature = Float(t) }
        if let t = try double("top_p") { p.topP = Float(t) }
        if let k = try int("top_k") { p.topK = k }
        if let m = try double("min_p") { p.minP = Float(m) }
        if let r = try double("repetition_penalty") { p.repetitionPenalty = Float(r) }
        if let x = try double("presence_penalty") { p.presencePenalty = Float(x) }
        if let x = try double("frequency_penalty") { p.frequencyPenalty = Float(x) }
        if let s = try int("seed") { p.seed = UInt64(bitPattern: Int64(s)) }
        if let m = try int("min_tokens") { p.minTokens = m }
        if let s = try stringOrList("stop") {
            if s.contains(where: \.isEmpty) { throw APIError.invalid("stop strings must not be empty", param: "stop") }
            p.stop = s
        }
        if let ids = try intList("stop_token_ids") {
            if let bad = ids.first(where: { $0 < 0 || $0 >= vocabSize }) {
                throw APIError.invalid("stop_token_ids: token id \(bad) is out of the vocabulary (0..<\(vocabSize))", param: "stop_token_ids")
            }
            p.stopTokenIds = ids
        }
        if let b = try bool("ignore_eos") { p.ignoreEOS = b }
        if let b = try bool("skip_special_tokens") { p.skipSpecialTokens = b }
        if let b = try bool("include_stop_str_in_output") { p.includeStopStrInOutput = b }
        if let v = value("logit_bias") {
            guard case .object(let bias) = v else { throw Self.wrongType("logit_bias", "an object mapping token ids to numbers", v) }
            for (k, b) in bias.pairs {
                guard let id = Int(k.trimmingCharacters(in: .whitespaces)), id >= 0, id < vocabSize else {
                    throw APIError.invalid("logit_bias: key '\(k)' is not a token id in 0..<\(vocabSize)", param: "logit_bias")
                }
                let x: Double
                switch b {
                case .int(let i): x = Double(i)
                case .double(let d): x = d
                default: throw Self.wrongType("logit_bias", "an object mapping token ids to numbers", v)
                }
                p.logitBias[id] = Float(x)
            }
        }
        o.explicitMaxTokens = try int("max_completion_tokens") ?? int("max_tokens")
        if chat {
            let want = try bool("logprobs") ?? false
            let top = try int("top_logprobs")
            if let top, !(0...20).contains(top) {
                throw APIError.invalid("top_logprobs must be between 0 and 20, got \(top)", param: "top_logprobs")
            }
            if top != nil && top! > 0 && !want {
                throw APIError.invalid("top_logprobs requires logprobs to be true", param: "top_logprobs")
            }
            if want { o.logprobs = top ?? 0 }
        } else {
            if let k = try int("logprobs") {
                if !(0...20).contains(k) { throw APIError.invalid("logprobs must be between 0 and 20, got \(k)", param: "logprobs") }
                o.logprobs = k
            }
            o.echo = try bool("echo") ?? false
        }
        p.logprobs = o.logprobs
        if let pl = try int("prompt_logprobs") { p.promptLogprobs = pl }
        if o.echo, let k = o.logprobs { p.promptLogprobs = max(p.promptLogprobs ?? 0, k) }
        if let best = try int("best_of"), best < p.n {
            throw APIError.invalid("best_of must be at least n", param: "best_of")
        }
        _ = try string("user")
        o.stream = try bool("stream") ?? false
        if let so = value("stream_options") {
            guard case .object(let opts) = so else { throw Self.wrongType("stream_options", "an object", so) }
            if let iu = opts["include_usage"] {
                switch iu {
                case .bool(let b): o.includeUsage = b
                case .none: break
                default: throw Self.wrongType("stream_options.include_usage", "a boolean", iu)
                }
            }
        }
        o.returnTokenIds = try bool("return_token_ids") ?? false
        o.priority = try int("priority") ?? 0
        o.params = p
        return o
    }
}
