/**
 * The failure of an SFTP request, apart from the adapter that makes requests: the public `Ssh`
 * module re-exports it, and its declarations must not reach ssh2's types.
 */
import * as Schema from "effect/Schema"

/**
 * SFTP status codes (draft-ietf-secsh-filexfer-02). `connectionLost` also stands for a request
 * made on a session that is already closed, which ssh2 would never answer.
 *
 * @since 0.1.0
 */
export const SftpStatus = {
  eof: 1,
  noSuchFile: 2,
  permissionDenied: 3,
  failure: 4,
  badMessage: 5,
  noConnection: 6,
  connectionLost: 7,
  opUnsupported: 8
} as const

/**
 * An SFTP request failed: the server answered with a status other than success, or the session
 * was closed. `code` is the SFTP status code ({@link SftpStatus}), `request` the request
 * (`"open"`, `"stat"`...) and `path` the file it was about.
 *
 * @example
 * ```ts
 * const exists = sftp.stat(path).pipe(
 *   Effect.as(true),
 *   Effect.catchIf((e) => e.code === Ssh.SftpStatus.noSuchFile, () => Effect.succeed(false))
 * )
 * ```
 *
 * @since 0.1.0
 */
export class SftpError extends Schema.TaggedError<SftpError>()("SftpError", {
  request: Schema.String,
  path: Schema.String,
  code: Schema.Number,
  detail: Schema.String
}) {
  override get message(): string {
    return `SFTP ${this.request} ${this.path} failed (status ${this.code}): ${this.detail}`
  }
}
