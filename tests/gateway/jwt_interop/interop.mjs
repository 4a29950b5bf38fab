// An independent JWT implementation (jose, https://github.com/panva/jose)
// for tests/gateway/test_gw_jwt_interop.c, which checks lib/mb_jwt against
// it both ways. The secret comes from MUSICBUS_JWT_SECRET (its bytes, as
// mb_jwt_key_load() reads it), never from the command line.
//
//   node interop.mjs sign 'CLAIMS_JSON' [ALG]   prints a token signed by jose
//        ALG: HS256 (default), HS384, HS512, or none (an unsecured JWT)
//   node interop.mjs verify ISS AUD < token     verifies it with jose (HS256
//        only), prints the payload as JSON; exit 1 with the reason on stderr
import { SignJWT, UnsecuredJWT, jwtVerify } from "jose";
import { readFileSync } from "node:fs";

function secret() {
  const s = process.env.MUSICBUS_JWT_SECRET;
  if (!s) throw new Error("MUSICBUS_JWT_SECRET is not set");
  return new TextEncoder().encode(s);
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  if (cmd === "sign") {
    const claims = JSON.parse(rest[0] ?? "{}");
    const alg = rest[1] ?? "HS256";
    const token =
      alg === "none"
        ? new UnsecuredJWT(claims).encode()
        : await new SignJWT(claims).setProtectedHeader({ alg, typ: "JWT" }).sign(secret());
    process.stdout.write(token + "\n");
  } else if (cmd === "verify") {
    const [issuer, audience] = rest;
    const token = readFileSync(0, "utf8").trim();
    const { payload, protectedHeader } = await jwtVerify(token, secret(), {
      algorithms: ["HS256"],
      issuer,
      audience,
    });
    process.stdout.write(JSON.stringify({ header: protectedHeader, payload }) + "\n");
  } else {
    throw new Error("usage: interop.mjs sign CLAIMS_JSON [ALG] | verify ISS AUD < token");
  }
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`interop.mjs: ${err.code ?? "error"}: ${err.message}\n`);
  process.exit(1);
});
