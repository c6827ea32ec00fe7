"""`crossrec-peft push ADAPTER --repo-id ORG/NAME [--private] [--revision BRANCH] [--commit-message ...]`:
upload a verified adapter package to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""

from __future__ import annotations

NAME = "push"
HELP = "upload an adapter package to the Hugging Face Hub"


def add_arguments(parser) -> None:
    parser.add_argument("adapter", help="an adapter package directory (a run's adapter/ folder)")
    parser.add_argument("--repo-id", required=True, help="the Hub model repository, ORG/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    parser.add_argument("--commit-message", default=None, help="default: 'Upload crossrec-peft adapter <package id>'")


def run(args) -> None:
    from ..hub import push

    url = push(args.adapter, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message)
    print(f"pushed {args.adapter} to {args.repo_id}: {url}")
    print(f"load it with: Recommender.from_pretrained(\"hf://{args.repo_id}{'@' + args.revision if args.revision else ''}\")")
