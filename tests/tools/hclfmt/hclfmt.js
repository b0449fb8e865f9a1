// Reads a JSON array of HCL documents on stdin and prints the JSON array of the same documents
// as hclwrite.Format lays them out (what `terraform fmt` does to spacing, indentation and
// alignment). One process for many documents: used by tests/operations/terraform_fmt.py.
const { format } = require("@cdktf/hcl-tools");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  try {
    const formatted = [];
    for (const document of JSON.parse(input)) {
      formatted.push(await format(document));
    }
    process.stdout.write(JSON.stringify(formatted));
  } catch (error) {
    process.stderr.write(String(error) + "\n");
    process.exit(1);
  }
});
