import Foundation
import XCTest
@testable import Pagoda

/// Language-level checks. Every expected string below was produced by Python Jinja2 3.1 configured
/// like Transformers (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
/// json.dumps-based tojson, strftime_now at 2026-01-01 00:00:00).
final class TemplateEdgeCaseTests: XCTestCase {
    static let now = Date(timeIntervalSince1970: 1_767_225_600)

    func render(_ source: String, _ context: String) throws -> String {
        guard case .object(let o) = try JinjaValue.parseJSON(context) else { throw TemplateError("bad context") }
        var ctx: [String: JinjaValue] = [:]
        for (k, v) in o.pairs { ctx[k] = v }
        return try JinjaTemplate(source).render(ctx, now: Self.now)
    }

    func check(_ source: String, _ expected: String, context: String = "{}", file: StaticString = #filePath, line: UInt = #line) {
        do {
            let got = try render(source, context)
            XCTAssertEqual(got, expected, file: file, line: line)
        } catch {
            XCTFail("threw \(error)", file: file, line: line)
        }
    }

    func checkThrows(_ source: String, context: String = "{}", contains fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let out = try render(source, context)
            XCTFail("expected an error, rendered \(out.debugDescription)", file: file, line: line)
        } catch {
            XCTAssertTrue("\(error)".contains(fragment), "\(error) does not mention \(fragment)", file: file, line: line)
        }
    }

    func testLstripAfterVariableSameLine() {
        check("{{ 'a' }}  {% if true %}b{% endif %}",
              "a  b")
    }

    func testLstripTabs() {
        check("x\n\t  {% if true %}y{% endif %}\n",
              "x\ny")
    }

    func testTrimOnlyOneNewline() {
        check("{% if true %}\n\nA{% endif %}",
              "\nA")
    }

    func testDashOnComment() {
        check("a  {#- c -#}  b",
              "ab")
    }

    func testNestedIfWhitespace() {
        check("<ul>\n{% for x in [1,2] %}\n  {% if x %}\n    <li>{{ x }}</li>\n  {% endif %}\n{% endfor %}\n</ul>",
              "<ul>\n    <li>1</li>\n    <li>2</li>\n</ul>")
    }

    func testBlockEndDashThenLstrip() {
        check("{%- if true -%}\n    {% if true %}x{% endif %}\n{%- endif %}",
              "x")
    }

    func testCrlfSource() {
        check("a\r\n{% if true %}\r\nb\r\n{% endif %}\r\n",
              "a\nb\n")
    }

    func testStringEscapes() {
        check("{{ 'a\\\\b' }}|{{ '\\u00e9\\x41' }}|{{ \"it's\" }}|{{ 'say \"hi\"' }}",
              "a\\b|éA|it's|say \"hi\"")
    }

    func testReprQuotes() {
        check("{{ [\"it's\", 'say \"x\"', 'both \\'\"', 'tab\\t', 'nl\\n', 'back\\\\'] }}",
              "[\"it's\", 'say \"x\"', 'both \\'\"', 'tab\\t', 'nl\\n', 'back\\\\']")
    }

    func testFloatFormatting() {
        check("{{ 1.5e300 * 1e10 }} {{ -0.0 }} {{ 100.0 }} {{ 2.5e-5 }} {{ 123456789012345678.0 }} {{ 0.1 * 3 }} {{ 1e22 }} {{ 5e-324 }} {{ 1.7976931348623157e308 }}",
              "inf -0.0 100.0 2.5e-05 1.2345678901234568e+17 0.30000000000000004 1e+22 5e-324 1.7976931348623157e+308")
    }

    func testIntFloatMix() {
        check("{{ 3 + 1.0 }} {{ 6 / 3 }} {{ 2 * 0.5 }} {{ 7.0 // 2 }} {{ 7.5 % 2 }} {{ true + true }}",
              "4.0 2.0 1.0 3.0 1.5 2")
    }

    func testConcatCoercion() {
        check("{{ 1 ~ 2 ~ none ~ true ~ [1] }}",
              "12NoneTrue[1]")
    }

    func testContainsOperators() {
        check("{{ 'ab' in 'cabd' }} {{ 1 in (1, 2) }} {{ 'x' in {'x': 1} }} {{ none in [none] }}",
              "True True True True")
    }

    func testTupleOps() {
        check("{{ (1,) }} {{ () }} {{ ((1, 2), 3) }} {% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %}",
              "(1,) () ((1, 2), 3) 37")
    }

    func testSlicesVarious() {
        check("{{ [0,1,2,3,4][1:4:2] }} {{ [0,1,2,3,4][-2:] }} {{ [0,1,2,3,4][:-2] }} {{ [0,1,2,3,4][::2] }} {{ [0,1,2,3,4][4:1:-1] }} {{ 'héllo'[1:] }}",
              "[1, 3] [3, 4] [0, 1, 2] [0, 2, 4] [4, 3, 2] éllo")
    }

    func testMessagesLike() {
        check("{% for m in messages %}{% if m.role == 'user' %}U:{{ m.content }}{% elif m['role'] == 'assistant' %}A:{{ m.content|trim }}{% endif %}\n{% endfor %}",
              "U:hiA:yo", context: "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \" yo \"}]}")
    }

    func testToolsJsonLike() {
        check("{% for t in tools %}{{ t | tojson(indent=4) }}\n{% endfor %}",
              "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"f\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"x\": {\n                    \"type\": \"number\",\n                    \"enum\": [\n                        1,\n                        2.5\n                    ]\n                }\n            }\n        }\n    }\n}\n", context: "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"number\", \"enum\": [1, 2.5]}}}}}]}")
    }

    func testTojsonSeparatorsSortKeys() {
        check("{{ d|tojson(separators=(',', ':')) }} {{ d|tojson(sort_keys=true) }}",
              "{\"b\":1,\"a\":[1,2]} {\"a\": [1, 2], \"b\": 1}", context: "{\"d\": {\"b\": 1, \"a\": [1, 2]}}")
    }

    func testTojsonUnicode() {
        check("{{ 'Ünïcødé 日本 😀'|tojson }} {{ 'Ünïcødé 😀'|tojson(ensure_ascii=true) }}",
              "\"Ünïcødé 日本 😀\" \"\\u00dcn\\u00efc\\u00f8d\\u00e9 \\ud83d\\ude00\"")
    }

    func testTojsonStringControl() {
        check("{{ '\\x00\\x1f\\x7f\\b\\f'|tojson }}",
              "\"\\u0000\\u001f\u{7f}\\b\\f\"")
    }

    func testStringOfContainers() {
        check("{{ d|string }} {{ [none, true, 1.5]|string }}",
              "{'k': \"v'q\"} [None, True, 1.5]", context: "{\"d\": {\"k\": \"v'q\"}}")
    }

    func testJoinAttributes() {
        check("{{ xs|join(', ', attribute='n') }}",
              "a, b", context: "{\"xs\": [{\"n\": \"a\"}, {\"n\": \"b\"}]}")
    }

    func testMapFilterWithArgs() {
        check("{{ ['a-b', 'c-d']|map('replace', '-', '+')|join(',') }}",
              "a+b,c+d")
    }

    func testSelectattrTests() {
        check("{{ xs|selectattr('n', 'gt', 1)|map(attribute='n')|list }} {{ xs|selectattr('s', 'string')|list|length }} {{ xs|rejectattr('s')|list|length }}",
              "[2, 3] 1 1", context: "{\"xs\": [{\"n\": 1, \"s\": \"a\"}, {\"n\": 2}, {\"n\": 3, \"s\": 5}]}")
    }

    func testUniqueCase() {
        check("{{ ['a', 'A', 'b']|unique(case_sensitive=true)|list }} {{ [{'x': 1}, {'x': 1}]|unique(attribute='x')|list }}",
              "['a', 'A', 'b'] [{'x': 1}]")
    }

    func testLengthOfThings() {
        check("{{ {'a': 1}|length }} {{ 'abc'|count }} {{ [1, 2]|length }}",
              "1 3 2")
    }

    func testFirstLastString() {
        check("{{ 'abc'|first }}{{ 'abc'|last }}",
              "ac")
    }

    func testWordcountCenter() {
        check("{{ 'hello big world'|wordcount }}|{{ 'ab'|center(6) }}|",
              "3|  ab  |")
    }

    func testSplitEdge() {
        check("{{ ''.split(',') }} {{ ''.split() }} {{ 'a b'.split(' ') }} {{ 'a  b'.split(' ') }} {{ ',a,'.split(',') }} {{ 'a b c'.split(none, 1) }}",
              "[''] [] ['a', 'b'] ['a', '', 'b'] ['', 'a', ''] ['a', 'b c']")
    }

    func testStripChars() {
        check("{{ '<<a>>'.strip('<>') }} {{ '\\n\\t x \\n'.strip() }} {{ 'xyz'.lstrip('x') }} {{ 'xyz'.rstrip('z') }}",
              "a x yz xy")
    }

    func testGetDefault() {
        check("{{ d.get('a') }} {{ d.get('b', 'B') }} {{ d.get('c') is none }}",
              "0 B True", context: "{\"d\": {\"a\": 0}}")
    }

    func testNamespaceIn() {
        check("{% set ns = namespace(found=false) %}{% for m in ['a', 'b'] %}{% if m == 'b' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}",
              "True")
    }

    func testNamespacePrint() {
        check("{% set ns = namespace(a=1) %}{{ ns.a }} {{ ns.missing is defined }}",
              "1 False")
    }

    func testSetInIfLeaks() {
        check("{% if true %}{% set x = 5 %}{% endif %}{{ x }}",
              "5")
    }

    func testSetInForDoesNotLeak() {
        check("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}",
              "1")
    }

    func testLoopInMacroCallsLoopVar() {
        check("{% macro m(xs) %}{% for x in xs %}{{ loop.index }}{% endfor %}{% endmacro %}{{ m([5, 6]) }}",
              "12")
    }

    func testMacroKwargsVarargs() {
        check("{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, z=4) }}",
              "1(2, 3){'z': 4}")
    }

    func testConditionalChain() {
        check("{{ 'a' if x == 1 else 'b' if x == 2 else 'c' }}",
              "b", context: "{\"x\": 2}")
    }

    func testNotPrecedence() {
        check("{{ not 1 == 2 }} {{ not x is defined }} {{ 'a' is not string }}",
              "True True False")
    }

    func testFilterOnExprParen() {
        check("{{ (1 + 2)|string + 'x' }} {{ -3|abs }} {{ (-3)|abs }}",
              "3x 3 3")
    }

    func testTestWithoutParens() {
        checkThrows("{{ 'abc' is startingwith }}", contains: "No test named 'startingwith'.")
    }

    func testUnknownFilterInIfNotRun() {
        check("{% if false %}{{ x|nosuchfilter }}{% endif %}ok",
              "ok")
    }

    func testUnknownFilterRuns() {
        checkThrows("{% if true %}{{ 1|nosuchfilter }}{% endif %}", contains: "No filter named 'nosuchfilter' found.")
    }

    func testStringComparisonsUnicode() {
        check("{{ 'é' > 'z' }} {{ 'B' < 'a' }} {{ [1, 2] < [1, 3] }}",
              "True True True")
    }

    func testCompareIncompatible() {
        checkThrows("{{ 1 < 'a' }}", contains: "'<' not supported between instances of '")
    }

    func testDivisionByZero() {
        checkThrows("{{ 1 / 0 }}", contains: "division by zero")
    }

    func testPercentFormatDict() {
        check("{{ '%s|%r' % ('a', 'b') }}",
              "a|'b'")
    }

    func testRangeLoop() {
        check("{% for i in range(2, -3, -2) %}{{ i }},{% endfor %}",
              "2,0,-2,")
    }

    func testItemsOnUndefined() {
        check("{% for k, v in missing|items %}x{% endfor %}ok",
              "ok")
    }

    func testDictsortByValue() {
        check("{{ d|dictsort(by='value') }}",
              "[('b', 1), ('a', 3)]", context: "{\"d\": {\"a\": 3, \"b\": 1}}")
    }

    func testMinMaxStrings() {
        check("{{ ['b', 'A', 'c']|min }} {{ ['b', 'A', 'c']|max }} {{ []|max }}",
              "A c ")
    }

    func testSumAttr() {
        check("{{ xs|sum(attribute='n') }} {{ [0.5, 1]|sum }}",
              "3 1.5", context: "{\"xs\": [{\"n\": 1}, {\"n\": 2}]}")
    }

    func testCapitalizeTitleUnicode() {
        check("{{ 'élan vital'|title }} {{ 'ÉLAN'|capitalize }}",
              "Élan Vital Élan")
    }

    func testIntFilterBase() {
        check("{{ '0x1A'|int(0, 16) }} {{ 'ff'|int(base=16) }} {{ ' 12 '|int }} {{ true|int }}",
              "26 255 12 1")
    }

    func testFloatRepr() {
        check("{{ 3.0|string }} {{ 1e100 }} {{ 12345678901234567.0 }} {{ 0.1|float }}",
              "3.0 1e+100 1.2345678901234568e+16 0.1")
    }

    func testRoundNegative() {
        check("{{ -2.5|round }} {{ 1234.5678|round(-2) }}",
              "-2.0 1200.0")
    }

    func testEqualityTypes() {
        check("{{ 1 == true }} {{ '1' == 1 }} {{ none == false }} {{ {'a': 1} == {'a': 1.0} }} {{ (1, 2) == [1, 2] }}",
              "True False False True False")
    }

}
