import ArgumentParser
import Pagoda

@main
struct PagodaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pagoda", abstract: "Pagoda: an LLM inference engine in Swift.",
        subcommands: [ServeCommand.self, GenerateCommand.self, TokenizeCommand.self, TemplateCommand.self, BenchCommand.self])
}
