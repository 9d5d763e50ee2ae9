import Foundation
import XCTest
@testable import Pagoda

final class TemplateAPITests: XCTestCase {
    func syntaxError(_ source: String, file: StaticString = #filePath, line: UInt = #line) -> TemplateError? {
        do {
            _ = try JinjaTemplate(source)
            XCTFail("expected a syntax error", file: file, line: line)
            return nil
        } catch let e as TemplateError {
            XCTAssertEqual(e.kind, .syntax, file: file, line: line)
            return e
        } catch {
            XCTFail("unexpected error type \(error)", file: file, line: line)
            return nil
        }
    }

    func testUnclosedIfNamesLine() throws {
        let e = try XCTUnwrap(syntaxError("hello\n{% if x %}\nbody"))
        XCTAssertEqual(e.line, 2)
        XCTAssertTrue(e.description.contains("line 2"), e.description)
        XCTAssertTrue(e.description.contains("endif"), e.description)
    }

    func testIncompleteExpressionNamesLine() throws {
        let e = try XCTUnwrap(syntaxError("a\nb\n{{ 1 + }}"))
        XCTAssertEqual(e.line, 3)
        XCTAssertTrue(e.description.contains("line 3"), e.description)
    }

    func testOtherSyntaxErrors() throws {
        XCTAssertEqual(syntaxError("{% for x in %}{% endfor %}")?.line, 1)
        XCTAssertEqual(syntaxError("x\n{% endif %}")?.line, 2)
        XCTAssertEqual(syntaxError("{{ 'unterminated }}")?.line, 1)
        XCTAssertEqual(syntaxError("\n\n{% frobnicate %}")?.line, 3)
        XCTAssertEqual(syntaxError("{{ x ")?.line, 1)
        XCTAssertEqual(syntaxError("{# never closed")?.line, 1)
        XCTAssertEqual(syntaxError("{% set %}")?.line, 1)
    }

    func testRuntimeErrorsCarryLine() throws {
        let t = try JinjaTemplate("ok\n{% for x in none %}{% endfor %}")
        XCTAssertThrowsError(try t.render([:])) { error in
            let e = error as? TemplateError
            XCTAssertEqual(e?.line, 2)
            XCTAssertTrue(e?.description.contains("not iterable") ?? false)
        }
    }

    func testRaiseException() throws {
        let t = try JinjaTemplate("{% if bad %}{{ raise_exception('Only user and assistant roles!') }}{% endif %}fine")
        XCTAssertEqual(try t.render(["bad": false]), "fine")
        XCTAssertThrowsError(try t.render(["bad": true])) { error in
            let e = error as? TemplateError
            XCTAssertEqual(e?.kind, .raised)
            XCTAssertEqual(e?.message, "Only user and assistant roles!")
        }
    }

    func testParseJSONKeepsKeyOrderAndTypes() throws {
        let v = try JinjaValue.parseJSON(#"{"z": 1, "a": 2.0, "m": [true, null, "s\u00e9\n"], "b": {"y": -3e2, "x": false}}"#)
        guard case .object(let o) = v else { return XCTFail("not an object") }
        XCTAssertEqual(o.keys, ["z", "a", "m", "b"])
        XCTAssertEqual(o["z"], .int(1))
        XCTAssertEqual(o["a"], .double(2.0))
        XCTAssertEqual(o["m"], .array([.bool(true), .none, .string("sé\n")]))
        let out = try JinjaTemplate("{{ v|tojson }}").render(["v": v])
        XCTAssertEqual(out, #"{"z": 1, "a": 2.0, "m": [true, null, "sé\n"], "b": {"y": -300.0, "x": false}}"#)
        XCTAssertThrowsError(try JinjaValue.parseJSON("{\"a\": }"))
        XCTAssertThrowsError(try JinjaValue.parseJSON("[1, 2"))
    }

    func testInitFromJSONSerialization() throws {
        let data = Data(#"{"b": true, "i": 1, "d": 1.5, "w": 2.0, "n": null, "s": "x", "l": [0, false]}"#.utf8)
        let v = JinjaValue(json: try JSONSerialization.jsonObject(with: data))
        XCTAssertEqual(v["b"], .bool(true))
        XCTAssertEqual(v["i"], .int(1))
        XCTAssertEqual(v["d"], .double(1.5))
        XCTAssertEqual(v["w"], .double(2.0))
        XCTAssertEqual(v["n"], JinjaValue.none)
        XCTAssertEqual(v["s"], .string("x"))
        XCTAssertEqual(v["l"], .array([.int(0), .bool(false)]))
    }

    func testChatTemplateContext() throws {
        let source = """
        {{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}
        {%- if tools is not none %}[tools={{ tools|length }}]{% endif %}
        {%- if add_generation_prompt %}<assistant>{% endif %}{{ enable_thinking is defined }}
        """
        let t = try ChatTemplate(source: source)
        let msgs: [JinjaValue] = [["role": "user", "content": "Hi"]]
        XCTAssertEqual(try t.render(messages: msgs, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>"),
                       "<s><user>Hi</s><assistant>False")
        XCTAssertEqual(try t.render(messages: msgs, tools: [["type": "function"]], addGenerationPrompt: false,
                                    bosToken: "", eosToken: "", extra: ["enable_thinking": false]),
                       "<user>Hi[tools=1]True")
    }

    func testStrftimeUsesGivenDate() throws {
        let t = try JinjaTemplate("{{ strftime_now('%d %B %Y %H:%M') }}")
        XCTAssertEqual(try t.render([:], now: Date(timeIntervalSince1970: 1_700_000_000)), "14 November 2023 22:13")
    }

    func testTemplateIsReusableAndSendable() async throws {
        let t = try JinjaTemplate("{% set ns = namespace(n=0) %}{% for i in range(k) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}")
        let results = await withTaskGroup(of: String.self) { group in
            for k in 0..<8 { group.addTask { (try? t.render(["k": .int(k)])) ?? "error" } }
            var out: [String] = []
            for await r in group { out.append(r) }
            return out.sorted()
        }
        XCTAssertEqual(results, ["0", "0", "1", "10", "15", "21", "3", "6"])
    }
}
