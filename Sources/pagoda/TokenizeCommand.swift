import ArgumentParser
import Foundation
import Pagoda

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "Print the token ids of a text.")

    @Option(help: "GGUF file (a vocab-only one is enough) or Hugging Face folder.") var model = defaultModelPath
    @Flag(help: "Print {\"ids\": [...]}.") var json = false
    @Flag(help: "Read the exact bytes of standard input as the text.") var stdin = false
    @Flag(help: "Add the model's special tokens (BOS/EOS) as it would for a prompt.") var addSpecial = false
    @Flag(help: "Treat special-token text such as <|im_start|> as plain text.") var noParseSpecial = false
    @Argument(help: "The text.") var text: String?

    func run() throws {
        let input: String
        if stdin {
            input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else if let text {
            input = text
        } else {
            throw ValidationError("give the text as an argument or use --stdin")
        }
        let tok: Tokenizer
        do { tok = try loadTokenizer(path: model) } catch let e as LoadError { throw CLIError("pagoda tokenize: \(e)") }
        let ids = tok.encode(input, addSpecialTokens: addSpecial, parseSpecial: !noParseSpecial)
        writeStdout(json ? try jsonString(["ids": ids]) + "\n" : ids.map(String.init).joined(separator: " ") + "\n")
    }
}
