/**
 * Building shell command lines from values safely.
 *
 * Operations take a command as shell text, run as written. When part of that text comes from a
 * variable, quote it: {@link sh} does so for every interpolated value, so a file name with a
 * space, a quote or `$(...)` in it stays one literal word.
 *
 * @since 0.1.0
 * @module
 */
import * as Internal from "./internal/command/shell.ts"

/**
 * Quotes one word for a POSIX shell, so the shell reads it back exactly.
 *
 * @example
 * ```ts
 * Shell.quote("it's") // 'it'\''s'
 * Shell.quote("plain") // plain
 * ```
 *
 * @since 0.1.0
 */
export const quote: (word: string) => string = Internal.quote

/**
 * A template tag for command lines: the text is kept as written and every interpolated value is
 * quoted. An array value becomes several quoted words.
 *
 * @example
 * ```ts
 * const release = "2024-05-01 hotfix"
 * Operations.remote(Shell.sh`ln -sfn releases/${release} current && ls ${["a b", "c"]}`)
 * // ln -sfn releases/'2024-05-01 hotfix' current && ls 'a b' c
 * ```
 *
 * @since 0.1.0
 */
export const sh = (
  strings: TemplateStringsArray,
  ...values: ReadonlyArray<string | number | ReadonlyArray<string | number>>
): string =>
  strings.reduce((line, text, i) => {
    if (i === 0) return text
    const value = values[i - 1]!
    const word = Array.isArray(value)
      ? Internal.join(value.map(String))
      : Internal.quote(String(value as string | number))
    return line + word + text
  }, "")
