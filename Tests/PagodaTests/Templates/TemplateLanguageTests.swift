import Foundation
import XCTest
@testable import Pagoda

/// Language-level checks. Every expected string below was produced by Python Jinja2 3.1 configured
/// like Transformers (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
/// json.dumps-based tojson, strftime_now at 2026-01-01 00:00:00).
final class TemplateLanguageTests: XCTestCase {
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

    func testTrimBlocks() {
        check("{% if true %}\nyes\n{% endif %}\nend",
              "yes\nend")
    }

    func testLstripBlocks() {
        check("a\n    {% if true %}\n    b\n    {% endif %}\nc",
              "a\n    b\nc")
    }

    func testLstripNotForVariables() {
        check("a\n    {{ 'x' }}\n",
              "a\n    x")
    }

    func testDashStrip() {
        check("a   {%- if true -%}   b   {%- endif -%}   c",
              "abc")
    }

    func testDashOutput() {
        check("a \n {{- 'x' -}} \n b",
              "axb")
    }

    func testPlusDisablesLstrip() {
        check("a\n    {%+ if true %}b{% endif %}",
              "a\n    b")
    }

    func testCommentTrim() {
        check("a\n  {# comment #}\nb {#- x -#}  c",
              "a\nbc")
    }

    func testTrailingNewlineDropped() {
        check("hello\n",
              "hello")
    }

    func testRawBlock() {
        check("{% raw %}{{ not parsed }}{% endraw %}",
              "{{ not parsed }}")
    }

    func testInlineBlocks() {
        check("{% for x in [1,2] %}{{ x }}{% endfor %} {% if 1 %}a{% else %}b{% endif %}",
              "12 a")
    }

    func testLoopVars() {
        check("{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}",
              "1032TrueFalse3|2121FalseFalse3|3210FalseTrue3|")
    }

    func testLoopPrevNext() {
        check("{% for x in [1,2,3] %}{{ loop.previtem is defined }}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}",
              "False-2;True1-3;True2-;")
    }

    func testLoopCycle() {
        check("{% for x in range(4) %}{{ loop.cycle('a','b','c') }}{% endfor %}",
              "abca")
    }

    func testLoopElse() {
        check("{% for x in [] %}x{% else %}empty{% endfor %}",
              "empty")
    }

    func testLoopFilter() {
        check("{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }},{% endfor %}",
              "15,35,55,75,95,")
    }

    func testLoopBreakContinue() {
        check("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}",
              "0134")
    }

    func testLoopUnpack() {
        check("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
              "b=1;a=2;", context: "{\"d\": {\"b\": 1, \"a\": 2}}")
    }

    func testLoopOverDict() {
        check("{% for k in d %}{{ k }}{% endfor %}",
              "za", context: "{\"d\": {\"z\": 1, \"a\": 2}}")
    }

    func testLoopScope() {
        check("{% set n = 0 %}{% for i in [1,2,3] %}{% set n = n + i %}{{ n }}{% endfor %}{{ n }}",
              "1230")
    }

    func testNestedLoops() {
        check("{% for a in [1,2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }}|{% endfor %}",
              "1x1 1y2 1|2x1 2y2 2|")
    }

    func testNamespace() {
        check("{% set ns = namespace(count=0, items=[]) %}{% for i in range(3) %}{% set ns.count = ns.count + i %}{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.count }} {{ ns.items }}",
              "3 [0, 1, 2]")
    }

    func testSetBlock() {
        check("{% set x %}  hello {{ 1 + 1 }} {% endset %}[{{ x }}]",
              "[  hello 2 ]")
    }

    func testSetBlockFilter() {
        check("{% set x | upper | trim %}  hello  {% endset %}[{{ x }}]",
              "[HELLO]")
    }

    func testSetTuple() {
        check("{% set a, b = 1, 2 %}{{ a }}{{ b }}",
              "12")
    }

    func testAppendIsUnsafe() {
        checkThrows("{% set l = [] %}{% set _ = l.append(1) %}{{ l }}", contains: "access to attribute 'append' of 'list' o")
    }

    func testMacroDefaults() {
        check("{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet('X', 'Hi') }}",
              "Hello, Bob! Hello, Al? Hi, X!")
    }

    func testMacroRecursion() {
        check("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}",
              "321")
    }

    func testMacroCaller() {
        check("{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}inside{% endcall %}",
              "<b>inside</b>")
    }

    func testMacroCallerArgs() {
        check("{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(v) each([1,2]) %}[{{ v }}]{% endcall %}",
              "[1][2]")
    }

    func testMacroSeesGlobals() {
        check("{% set g = 'G' %}{% macro m() %}{{ g }}{% endmacro %}{{ m() }}",
              "G")
    }

    func testMacroNamespaceMutation() {
        check("{% macro bump(s) %}{% set s.n = s.n + 1 %}{% endmacro %}{% set st = namespace(n=0) %}{{ bump(st) }}{{ bump(st) }}{{ st.n }}",
              "2")
    }

    func testFilterBlock() {
        check("{% filter upper %}hello {{ 'world' }}{% endfilter %}",
              "HELLO WORLD")
    }

    func testGenerationBlock() {
        check("a{% generation %}b{{ 1 }}{% endgeneration %}c",
              "ab1c")
    }

    func testArithmetic() {
        check("{{ 1 + 2 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 * 2 }} {{ 10 / 5 }} {{ 0.1 + 0.2 }}",
              "3 3.5 3 -4 1 2 1024 0.5 3.0 2.0 0.30000000000000004")
    }

    func testPrecedence() {
        checkThrows("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'a' ~ 1 + 2 }} {{ -2 ** 2 }} {{ not true or true }} {{ 2 * 3|string }}", contains: "can only concatenate str (not \"int\") to ")
    }

    func testComparisons() {
        check("{{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1,2] == [1,2] }} {{ 2 in [1,2] }} {{ 'x' not in 'abc' }} {{ 'k' in {'k': 1} }} {{ true == 1 }}",
              "True True True True True True True True")
    }

    func testLogic() {
        check("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' or [] }} {{ none and 1 }} {{ not none }}",
              "x y [] None True")
    }

    func testConditional() {
        check("{{ 'a' if true else 'b' }} {{ 'a' if false else 'b' }}[{{ 'a' if false }}]",
              "a b[]")
    }

    func testStrings() {
        check("{{ 'it''s' }} {{ \"a\\tb\\n\" }} {{ 'x' * 3 }} {{ 'abc'[1] }} {{ 'abc'[-1] }} {{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'ab' 'cd' }}",
              "its a\tb\n xxx b c el olleh abcd")
    }

    func testLists() {
        check("{{ [1, 2, 3][1:] }} {{ [1, 2, 3][::-1] }} {{ [1,2,3][-1] }} {{ [1] + [2] }} {{ (1, 2) }} {{ [] }} {{ [1,2,3][5] is defined }}",
              "[2, 3] [3, 2, 1] 3 [1, 2] (1, 2) [] False")
    }

    func testDicts() {
        check("{{ {'a': 1, 'b': [1, 'x'], 'c': none, 'd': true, 'e': 1.0} }} {{ d.x }} {{ d['x'] }} {{ d.get('y', 'def') }} {{ d.get('z') }} {{ d.keys()|list }} {{ d.values()|list }}",
              "{'a': 1, 'b': [1, 'x'], 'c': None, 'd': True, 'e': 1.0} 1 1 2 None ['x', 'y'] [1, 2]", context: "{\"d\": {\"x\": 1, \"y\": 2}}")
    }

    func testPythonPrinting() {
        check("{{ none }} {{ true }} {{ false }} {{ 1.0 }} {{ 1e20 }} {{ 1e-7 }} {{ 123456789.125 }} {{ ['a', \"b'c\", 'd\"e'] }} {{ 3.14 }} {{ 1/3 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }}",
              "None True False 1.0 1e+20 1e-07 123456789.125 ['a', \"b'c\", 'd\"e'] 3.14 0.3333333333333333 1e+16 1000000000000000.0 0.0001 1e-05")
    }

    func testUndefinedPrinting() {
        check("[{{ missing }}] [{{ d.missing }}] {{ missing is defined }} {{ missing|length }} {% for x in missing %}x{% endfor %}{{ missing ~ 'a' }}",
              "[] [] False 0 a", context: "{\"d\": {}}")
    }

    func testUndefinedAttrRaises() {
        checkThrows("{{ missing.attr }}", contains: "'missing' is undefined")
    }

    func testUndefinedAddRaises() {
        checkThrows("{{ missing + 'a' }}", contains: "'missing' is undefined")
    }

    func testNoneIterRaises() {
        checkThrows("{% for x in none %}{% endfor %}", contains: "'NoneType' object is not iterable")
    }

    func testTests() {
        check("{{ 'a' is string }} {{ 1 is string }} {{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ [] is sequence }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} {{ 1.0 is integer }} {{ true is boolean }} {{ 1 is boolean }} {{ none is none }} {{ x is undefined }} {{ 1 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 1 is eq 1 }} {{ 1 is ne 2 }} {{ 'a' is equalto('a') }} {{ 1 is lt 2 }} {{ 2 is ge 2 }} {{ true is true }} {{ false is false }} {{ 1.5 is float }} {{ x is not defined }}",
              "True False True False True True False True True True True True False True False True True True True True True True True True True True True True True")
    }

    func testTojson() {
        check("{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ [1, 'é', \"q\\\"\"]|tojson }}|{{ 'é\\u2028\\x01'|tojson(ensure_ascii=True) }}|{{ []|tojson(indent=2) }}|{{ {}|tojson }}|{{ 1.0|tojson }}|{{ none|tojson }}",
              "{\"b\": [1, 2.5, {\"c\": null}], \"a\": true, \"s\": \"x\\ny\"}|{\n  \"b\": [\n    1,\n    2.5,\n    {\n      \"c\": null\n    }\n  ],\n  \"a\": true,\n  \"s\": \"x\\ny\"\n}|[1, \"é\", \"q\\\"\"]|\"\\u00e9\\u2028\\u0001\"|[]|{}|1.0|null", context: "{\"d\": {\"b\": [1, 2.5, {\"c\": null}], \"a\": true, \"s\": \"x\\ny\"}}")
    }

    func testTojsonIndentNested() {
        check("{{ d|tojson(indent=4) }}",
              "{\n    \"a\": [],\n    \"b\": {},\n    \"c\": [\n        1,\n        [\n            2,\n            3\n        ]\n    ],\n    \"d\": {\n        \"e\": \"f\"\n    }\n}", context: "{\"d\": {\"a\": [], \"b\": {}, \"c\": [1, [2, 3]], \"d\": {\"e\": \"f\"}}}")
    }

    func testTojsonUndefinedRaises() {
        checkThrows("{{ missing|tojson }}", contains: "Object of type Undefined is not JSON ser")
    }

    func testTojsonGeneratorRaises() {
        checkThrows("{{ [1]|map('string')|tojson }}", contains: "Object of type generator is not JSON ser")
    }

    func testStringFilters() {
        check("{{ '  x  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'Hello'|upper }}{{ 'Hello'|lower }}|{{ 'hello world'|capitalize }}|{{ 'hello wORLD-x'|title }}|{{ 'aaa'|replace('a', 'b') }}|{{ 'aaa'|replace('a', 'b', 2) }}|{{ 'abc'|length }}|{{ 'héllo'|length }}",
              "x|a|HELLOhello|Hello world|Hello World-X|bbb|bba|3|5")
    }

    func testIndent() {
        check("{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, first=true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ 'x\\n'|indent(3) }}",
              "a\n    b\n\n    c|  a\n  b|a\n  \n  b|x\n")
    }

    func testDefaultFilter() {
        check("{{ missing|default('d') }} {{ ''|default('d') }} {{ ''|default('d', true) }} {{ none|default('d') }} {{ none|d('d', true) }} {{ 0|default(5) }}",
              "d  d None d 0")
    }

    func testListFilters() {
        check("{{ [3,1,2]|sort }} {{ ['b','A','c']|sort }} {{ [3,1,2]|sort(reverse=true) }} {{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ [1,2,3]|length }} {{ [1,2,3]|join('-') }} {{ [1,'a',2.5]|join }} {{ ['a','A','b']|unique|list }} {{ [3,1,2]|min }} {{ [3,1,2]|max }} {{ [1,2,3]|sum }} {{ [1,2,3]|reverse|list }} {{ 'abc'|list }} {{ [1,2,3,4,5]|batch(2)|list }}",
              "[1, 2, 3] ['A', 'b', 'c'] [3, 2, 1] 1 3 3 1-2-3 1a2.5 ['a', 'b'] 1 3 6 [3, 2, 1] ['a', 'b', 'c'] [[1, 2], [3, 4], [5]]")
    }

    func testAttrFilters() {
        check("{{ xs|selectattr('t', 'equalto', 'a')|map(attribute='n')|list }} {{ xs|rejectattr('t', 'equalto', 'a')|map(attribute='n')|join(',') }} {{ xs|selectattr('opt')|list|length }} {{ xs|selectattr('opt', 'defined')|list|length }} {{ xs|map(attribute='n')|unique|list }} {{ xs|sort(attribute='n')|map(attribute='n')|list }} {{ xs|map(attribute='missing', default='z')|list }}",
              "[2, 3] 1 1 1 [2, 1, 3] [1, 2, 3] ['z', 'z', 'z']", context: "{\"xs\": [{\"t\": \"a\", \"n\": 2}, {\"t\": \"b\", \"n\": 1, \"opt\": true}, {\"t\": \"a\", \"n\": 3}]}")
    }

    func testSelectReject() {
        check("{{ [1,2,3,4]|select('odd')|list }} {{ [1,2,3,4]|reject('odd')|list }} {{ ['a','b']|reject('equalto','a')|list }} {{ [0,1,'',none,'x']|select|list }} {{ ['a','b']|map('upper')|list }}",
              "[1, 3] [2, 4] ['b'] [1, 'x'] ['A', 'B']")
    }

    func testDictFilters() {
        check("{{ d|dictsort }} {{ d|dictsort(reverse=true) }} {{ d|items|list }} {% for k, v in d|dictsort %}{{ k }}{{ v }}{% endfor %}",
              "[('A', 2), ('b', 1), ('c', 0)] [('c', 0), ('b', 1), ('A', 2)] [('b', 1), ('A', 2), ('c', 0)] A2b1c0", context: "{\"d\": {\"b\": 1, \"A\": 2, \"c\": 0}}")
    }

    func testNumberFilters() {
        check("{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 4.7|int }} {{ '1.5'|float }} {{ 3|float }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.1|round(method='ceil') }}",
              "42 4 0 7 4 1.5 3.0 3 2.57 2.0 4.0 3.0")
    }

    func testStringMethods() {
        check("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}|{{ 'hello world'.title() }}|{{ 'hello'.capitalize() }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}{{ 'abc'.find('z') }}|{{ 'abab'.count('ab') }}|{{ '-'.join(['a', 'b']) }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '123'.isdigit() }}{{ '12a'.isdigit() }}",
              "a b|a|a|a|['a', 'b', '', 'c']|['a', 'b']|['a', 'b,c']|['a,b', 'c']|TrueTrue|HELLOhello|Hello World|Hello|bXb|13-1|2|a-b|['a', 'b', 'c']|TrueFalse")
    }

    func testStrFormat() {
        check("{{ '{} and {}'.format('a', 1) }}|{{ '{0}{0}{1}'.format('x', 'y') }}|{{ '{name}!'.format(name='n') }}|{{ '{{literal}}'.format() }}|{{ '%s is %d' % ('x', 3) }}|{{ '%.2f' % 3.14159 }}|{{ '%s' % 'one' }}|{{ '%05d|%-4s|' % (42, 'ab') }}",
              "a and 1|xxy|n!|{literal}|x is 3|3.14|one|00042|ab  |")
    }

    func testStrftime() {
        check("{{ strftime_now('%Y-%m-%d %H:%M:%S') }}|{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%B %d, %Y') }}|{{ strftime_now('%A %a %-d %-m %j %y %I %p') }}",
              "2026-01-01 00:00:00|01 Jan 2026|January 01, 2026|Thursday Thu 1 1 001 26 12 AM")
    }

    func testRaiseException() {
        checkThrows("{{ raise_exception('boom') }}", contains: "boom")
    }

    func testRangeFunc() {
        check("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3, 0, -1)|list }}",
              "[0, 1, 2] [1, 3, 5] [3, 2, 1]")
    }

    func testDictLiteralIntKeys() {
        check("{% set m = {1024: 'a', 2: 'b'} %}{{ m[2] }}{{ m }}{% for k, v in m|dictsort %}{{ k }}{% endfor %}",
              "b{1024: 'a', 2: 'b'}21024")
    }

    func testMarkup() {
        check("{{ '<b>'|safe + '<i>' }} {{ '<'|safe ~ '<' }} {% set x = '&'|safe %}{{ x + '&' }} {{ '<a>'|e }}",
              "<b>&lt;i&gt; << &&amp; &lt;a&gt;")
    }

    func testIfElif() {
        check("{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}other{% endif %} {% endfor %}",
              "one two other ")
    }

    func testWithBlock() {
        check("{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]",
              "3[]")
    }

    func testAttributeOfNone() {
        check("[{{ none.x }}]",
              "[]")
    }

    func testDictMethodShadowsKey() {
        check("{{ d.items()|list }} {{ d['items'] }}",
              "[('items', 5)] 5", context: "{\"d\": {\"items\": 5}}")
    }

    func testIntKeyLookup() {
        check("{{ [10, 20, 30][1] }} {{ xs.1 }}",
              "20 2", context: "{\"xs\": [1, 2, 3]}")
    }

}
