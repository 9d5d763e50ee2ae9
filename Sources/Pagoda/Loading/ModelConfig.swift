import Foundation

/// How rotary embeddings pair the dimensions of a head.
public enum RopeStyle: Sendable {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's layout for Llama GGUF files (Q/K rows are stored permuted).
    case interleaved
    /// Halves (i, i + d/2): Hugging Face's `rotate_half`, and llama.cpp's NEOX mode (Qwen2/3 GGUF).
    case neox
}

/// Llama 3 style frequency-dependent RoPE scaling.
public struct Llama3RopeScaling: Sendable, Equatable {
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositions: Int
}

/// The shape and hyper-parameters of a Llama-family decoder.
public struct ModelConfig: Sendable {
    public var architecture: String
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var ropeStyle: RopeStyle
    public var llama3Scaling: Llama3RopeScaling?
    /// Linear position scaling (rope_scaling type "linear"): positions are divided by this.
    public var linearRopeFactor: Double = 1
    /// Round the RoPE inverse frequencies to bf16. Transformers does this for a checkpoint loaded in its
    /// stored bf16 dtype (the `inv_freq` buffer is cast with the model), and such models were run that way.
    public var ropeFrequenciesInBF16 = false
    public var maxPositions: Int
    public var tiedEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int] = []

    static let supported = ["llama", "mistral", "qwen2", "qwen3", "smollm"]

    /// Per-pair inverse frequencies (headDim/2 of them), with any scaling applied.
    public func inverseFrequencies() -> [Float] {
        let half = headDim / 2
        var out = [Float](repeating: 0, count: half)
        for i in 0..<half {
            // float32 arithmetic, as Transformers computes inv_freq
            var f = Double(1 / powf(Float(ropeTheta), Float(2 * i) / Float(headDim)))
            if let s = llama3Scaling {
                let lowWavelen = Double(s.originalMaxPositions) / s.lowFreqFactor
                let highWavelen = Double(s.originalMaxPositions) / s.highFreqFactor
                let wavelen = 2 * Double.pi / f
                if wavelen > lowWavelen {
                    f /= s.factor
                } else if wavelen >= highWavelen {
                    let smooth = (Double(s.originalMaxPositions) / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                    f = (1 - smooth) * f / s.factor + smooth * f
                }
            }
            out[i] = Float(f / linearRopeFactor)
            if ropeFrequenciesInBF16 { out[i] = bf16ToFloat(floatToBF16(out[i])) }
        }
        return out
    }

    /// Reads `{arch}.*` metadata of a GGUF file.
    public static func fromGGUF(_ gguf: GGUFFile) throws -> ModelConfig {
        func fail(_ m: String) -> LoadError { LoadError(file: gguf.path, message: m) }
        guard let arch = gguf["general.architecture"]?.string else { throw fail("missing general.architecture") }
        guard supported.contains(arch) else {
            throw fail("architecture \(arch) is not supported (supported: \(supported.joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int {
            guard let v = gguf["\(arch).\(key)"]?.int else { throw fail("missing or non-integer \(arch).\(key)") }
            return v
        }
        let hidden = try int("embedding_length")
        let heads = try int("attention.head_count")
        let kvHeads = gguf["\(arch).attention.head_count_kv"]?.int ?? heads
        let headDim = gguf["\(arch).attention.key_length"]?.int ?? (hidden / max(heads, 1))
        var vocab = gguf["\(arch).vocab_size"]?.int ?? gguf["tokenizer.ggml.tokens"]?.array?.count ?? 0
        if vocab == 0, let emb = gguf.tensorInfo("token_embd.weight"), emb.shape.count == 2 { vocab = emb.shape[1] }
        var config = ModelConfig(
            architecture: arch,
            hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"),
            layerCount: try int("block_count"),
            headCount: heads,
            kvHeadCount: kvHeads,
            headDim: headDim,
            vocabSize: vocab,
            rmsNormEps: gguf["\(arch).attention.layer_norm_rms_epsilon"]?.float ?? 1e-5,
            ropeTheta: gguf["\(arch).rope.freq_base"]?.double ?? 10000,
            ropeStyle: (arch == "llama" || arch == "mistral" || arch == "smollm") ? .interleaved : .neox,
            llama3Scaling: nil,
            maxPositions: gguf["\(arch).context_length"]?.int ?? 2048,
            tiedEmbeddings: gguf.tensorInfo("output.weight") == nil,
            bosTokenId: gguf["tokenizer.ggml.bos_token_id"]?.int)
        if let eos = gguf["tokenizer.ggml.eos_token_id"]?.int { config.eosTokenIds = [eos] }
        if let eot = gguf["tokenizer.ggml.eot_token_id"]?.int, !config.eosTokenIds.contains(eot) { config.eosTokenIds.append(eot) }
        if gguf["\(arch).rope.scaling.type"]?.string == "linear", let f = gguf["\(arch).rope.scaling.factor"]?.double, f > 0 {
            config.linearRopeFactor = f
        }
        try config.validate(file: gguf.path)
        return config
    }

    /// Reads a Hugging Face `config.json` (and `generation_config.json` beside it for EOS ids).
    public static func fromHuggingFace(folder: URL) throws -> ModelConfig {
        let url = folder.appendingPathComponent("config.json")
        let path = url.path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LoadError(file: path, message: "cannot read config.json")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoadError(file: path, message: "not a JSON object")
        }
        func fail(_ m: String) -> LoadError { LoadError(file: path, message: m) }
        func int(_ key: String) throws -> Int {
            guard let v = json[key] as? Int else { throw fail("missing or non-integer field \"\(key)\"") }
            return v
        }
        guard let modelType = json["model_type"] as? String else { throw fail("missing field \"model_type\"") }
        guard supported.contains(modelType) else {
            throw fail("model_type \(modelType) is not supported (supported: \(supported.joined(separator: ", ")))")
        }
        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let ropeParams = json["rope_parameters"] as? [String: Any]
        let ropeScaling = (json["rope_scaling"] as? [String: Any]) ?? ropeParams
        let theta = (json["rope_theta"] as? Double) ?? (ropeParams?["rope_theta"] as? Double) ?? 10000
        var config = ModelConfig(
            architecture: modelType,
            hiddenSize: hidden,
            intermediateSize: try int("intermediate_size"),
            layerCount: try int("num_hidden_layers"),
            headCount: heads,
            kvHeadCount: (json["num_key_value_heads"] as? Int) ?? heads,
            headDim: (json["head_dim"] as? Int) ?? hidden / max(heads, 1),
            vocabSize: try int("vocab_size"),
            rmsNormEps: Float((json["rms_norm_eps"] as? Double) ?? 1e-6),
            ropeTheta: theta,
            ropeStyle: .neox,
            llama3Scaling: nil,
            maxPositions: (json["max_position_embeddings"] as? Int) ?? 2048,
            tiedEmbeddings: (json["tie_word_embeddings"] as? Bool) ?? false,
            bosTokenId: json["bos_token_id"] as? Int)
        let ropeType = (ropeScaling?["rope_type"] as? String) ?? (ropeScaling?["type"] as? String)
        if ropeType == "llama3", let s = ropeScaling {
            config.llama3Scaling = Llama3RopeScaling(
                factor: s["factor"] as? Double ?? 8,
                lowFreqFactor: s["low_freq_factor"] as? Double ?? 1,
                highFreqFactor: s["high_freq_factor"] as? Double ?? 4,
                originalMaxPositions: s["original_max_position_embeddings"] as? Int ?? 8192)
        } else if ropeType == "linear", let f = ropeScaling?["factor"] as? Double, f > 0 {
            config.linearRopeFactor = f
        }
        config.eosTokenIds = eosIds(json["eos_token_id"])
        let storedDType = (json["dtype"] as? String) ?? (json["torch_dtype"] as? String)
        config.ropeFrequenciesInBF16 = storedDType == "bfloat16"
        let gen = folder.appendingPathComponent("generation_config.json")
        if let d = FileManager.default.contents(atPath: gen.path),
           let g = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] {
            let ids = eosIds(g["eos_token_id"])
            if !ids.isEmpty { config.eosTokenIds = ids }
        }
        try config.validate(file: path)
        return config
    }

    private static func eosIds(_ v: Any?) -> [Int] {
        if let i = v as? Int { return [i] }
        if let a = v as? [Int] { return a }
        return []
    }

    func validate(file: String) throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw LoadError(file: file, message: m) } }
        try check(hiddenSize > 0 && layerCount > 0 && headCount > 0 && kvHeadCount > 0 && vocabSize > 0 && intermediateSize > 0,
                  "sizes must be positive (hidden \(hiddenSize), layers \(layerCount), heads \(headCount), kv heads \(kvHeadCount), vocab \(vocabSize))")
        try check(headCount % kvHeadCount == 0, "head count \(headCount) is not a multiple of the KV head count \(kvHeadCount)")
        try check(headDim > 0 && headDim % 2 == 0, "head dimension \(headDim) must be even")
    }
}
