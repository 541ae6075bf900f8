/**
 * Text that is no command output shown on one terminal line: a command, a path, an error's first
 * line. Shared by run lines, the command line's dry run and summary, so that they all escape alike.
 */

/**
 * `text` with its control characters written out: `\n`, `\r`, and `\xNN` for the rest of C0,
 * DEL and C1 (tab excepted). C1 counts: U+009B is a CSI and U+0085 a new line to terminals that
 * read C1 controls (xterm, VTE), so leaving it would let a name move the cursor all the same.
 */
export const oneLine = (text: string): string =>
  // eslint-disable-next-line no-control-regex
  text.replace(/[\x00-\x08\x0a-\x1f\x7f-\x9f]/g, (c) =>
    c === "\n" ? "\\n" : c === "\r" ? "\\r" : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)
