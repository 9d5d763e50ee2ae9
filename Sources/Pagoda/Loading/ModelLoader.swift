import Foundation

/// Everything loaded from a model file or folder: configuration, weights, tokenizer and chat template.
public struct LoadedModel: Sendable {
    public let path: String
    public let config: ModelConfig
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate?
    public let chatTemplateSource: String?
    /// Ids that end generation: the model's and the tokenizer's end-of-sequence tokens.
    public let eosTokenIds: Set<Int>

    public var bosToken: String { tokenizer.bosTokenId.map { tokenizer.tokenString($0) } ?? "" }
    public var eosToken: String { tokenizer.eosTokenId.map { tokenizer.tokenString($0) } ?? "" }
}

public enum ModelLoader {
    /// Reads only the configuration of a GGUF file or Hugging Face folder (no weights, no tokenizer).
    public static func loadConfig(path: String) throws -> ModelConfig {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LoadError(file: path, message: "no such file or folder")
        }
        if isDir.boolValue { return try ModelConfig.fromHuggingFace(folder: URL(fileURLWithPath: path)) }
        return try ModelConfig.fromGGUF(try GGUFFile(path: path))
    }

    /// Loads a GGUF file, or a Hugging Face folder (config.json, *.safetensors, tokenizer.json, ...).
    public static func load(path: String, progress: (String) -> Void = { _ in }) throws -> LoadedModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw LoadError(file: path, message: "no such file or folder")
        }
        let config: ModelConfig
        let weights: WeightStore
        let tokenizer: Tokenizer
        var templateSource: String?
        if isDir.boolValue {
            let folder = URL(fileURLWithPath: path)
            progress("reading \(path)/config.json")
            config = try ModelConfig.fromHuggingFace(folder: folder)
            progress("mapping safetensors weights")
            weights = try WeightStore.huggingFace(folder: folder)
            let tokJSON = folder.appendingPathComponent("tokenizer.json")
            let tokConfig = folder.appendingPathComponent("tokenizer_config.json")
            tokenizer = try Tokenizer.fromHuggingFace(
                tokenizerJSON: tokJSON,
                tokenizerConfig: FileManager.default.fileExists(atPath: tokConfig.path) ? tokConfig : nil)
            templateSource = try chatTemplate(folder: folder)
        } else {
            progress("reading GGUF \(path)")
            let gguf = try GGUFFile(path: path)
            config = try ModelConfig.fromGGUF(gguf)
            weights = WeightStore.gguf(gguf)
            tokenizer = try Tokenizer.fromGGUF(gguf)
            templateSource = gguf["tokenizer.chat_template"]?.string
        }
        progress("preparing \(config.architecture) weights: \(config.layerCount) layers, hidden \(config.hiddenSize), vocab \(config.vocabSize)")
        let model = try LlamaModel(config: config, weights: weights)
        var template: ChatTemplate?
        if let src = templateSource {
            do {
                template = try ChatTemplate(source: src)
            } catch {
                throw LoadError(file: path, message: "the chat template does not parse: \(error)")
            }
        }
        var eos = tokenizer.eosTokenIds
        eos.formUnion(config.eosTokenIds)
        return LoadedModel(path: path, config: config, model: model, tokenizer: tokenizer, chatTemplate: template,
                           chatTemplateSource: templateSource, eosTokenIds: eos)
    }

    /// The chat template of a Hugging Face folder: chat_template.jinja, or `chat_template` in tokenizer_config.json
    /// (a string, or a list of named templates of which "default" is used).
    static func chatTemplate(folder: URL) throws -> String? {
        let jinja = folder.appendingPathComponent("chat_template.jinja")
        if let d = FileManager.default.contents(atPath: jinja.path) { return String(decoding: d, as: UTF8.self) }
        let cfg = folder.appendingPathComponent("tokenizer_config.json")
        guard let d = FileManager.default.contents(atPath: cfg.path) else { return nil }
        guard let json = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
            throw LoadError(file: cfg.path, message: "not a JSON object")
        }
        if let s = json["chat_template"] as? String { return s }
        if let list = json["chat_template"] as? [[String: Any]] {
            let named = list.first { ($0["name"] as? String) == "default" } ?? list.first
            return named?["template"] as? String
        }
        return nil
    }
}
