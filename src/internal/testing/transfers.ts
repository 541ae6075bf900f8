/**
 * Where transfers meet `Testing.layer`. Each transfer entry point asks `interceptUpload`,
 * `interceptDownload` or `interceptRsync` first: outside the test layer they answer `None` at
 * the cost of one context lookup, and the transfer runs; under it the scripted answer is the
 * transfer's result, and no connection is made.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as path from "node:path"
import { TransferError } from "../../Errors.ts"
import type { Settings } from "../../Settings.ts"
import * as Files from "../local/files.ts"

/** What an upload was asked to send: a local path, bytes, or `{ content }`. */
export type UploadSource = string | Uint8Array | { readonly content: string | Uint8Array }

/** The scripted transfers. */
export interface TransferFakeShape {
  readonly upload: (request: {
    readonly source: UploadSource
    readonly remotePath: string
    readonly settings: Settings
  }) => Effect.Effect<string>
  /** Answers with the content and where to put it (`undefined`: into memory). */
  readonly download: (request: {
    readonly remotePath: string
    readonly target: string | undefined
    readonly settings: Settings
  }) => Effect.Effect<
    { readonly local: string | undefined; readonly content: Uint8Array; readonly dryRun?: boolean },
    TransferError
  >
  readonly rsync: (request: {
    readonly direction: "upload" | "download"
    readonly localPath: string
    readonly remotePath: string
    readonly settings: Settings
  }) => Effect.Effect<void>
}

/** The transfer fake in use; none outside `Testing.layer`. */
export const TransferFake = Context.Reference<TransferFakeShape | undefined>(
  "effect-threadbare/internal/testing/TransferFake",
  { defaultValue: () => undefined }
)

const fakeInUse: Effect.Effect<TransferFakeShape | undefined> = Effect.gen(function*() {
  return yield* TransferFake
})

/** Under the test layer, records the upload and answers with the remote path it would write. */
export const interceptUpload = (
  source: UploadSource,
  remotePath: string,
  settings: Settings
): Effect.Effect<Option.Option<string>> =>
  Effect.flatMap(
    fakeInUse,
    (fake) =>
      fake === undefined ? Effect.succeedNone : Effect.asSome(fake.upload({ source, remotePath, settings }))
  )

/**
 * Under the test layer, records the download and answers from the script's files: the bytes
 * for a download into memory, else the local path written (a real file, so the program can read
 * what it downloaded; a target that is a directory gets the remote file's name inside it).
 */
export const interceptDownload = (
  remotePath: string,
  target: string | undefined,
  settings: Settings
): Effect.Effect<Option.Option<string | Uint8Array>, TransferError> =>
  Effect.flatMap(fakeInUse, (fake) =>
    fake === undefined ? Effect.succeedNone : Effect.gen(function*() {
      const { content, dryRun, local } = yield* fake.download({ remotePath, target, settings })
      if (local === undefined) return Option.some<string | Uint8Array>(content)
      if (dryRun === true) return Option.some<string | Uint8Array>(local)
      const file = local.endsWith("/") || (yield* isDirectory(local))
        ? path.join(local, path.posix.basename(remotePath))
        : local
      yield* Files.makeDirectory(path.dirname(file), { recursive: true }).pipe(
        Effect.andThen(Files.writeFile(file, content)),
        Effect.mapError((error) =>
          new TransferError({
            host: settings.host ?? "",
            path: file,
            side: "local",
            reason: "permission",
            detail: `could not write the scripted download: ${String(error.cause)}`
          })
        )
      )
      return Option.some<string | Uint8Array>(file)
    }))

/** Under the test layer, records an rsync transfer; it then did nothing. */
export const interceptRsync = (
  direction: "upload" | "download",
  localPath: string,
  remotePath: string,
  settings: Settings
): Effect.Effect<Option.Option<void>> =>
  Effect.flatMap(
    fakeInUse,
    (fake) =>
      fake === undefined
        ? Effect.succeedNone
        : Effect.asSome(fake.rsync({ direction, localPath, remotePath, settings }))
  )

// A path that cannot be looked at is taken as a file name: writing it then says what is wrong.
const isDirectory = (p: string): Effect.Effect<boolean> =>
  Files.stat(p).pipe(
    Effect.map((info) => info?.isDirectory() === true),
    Effect.orElseSucceed(() => false)
  )
