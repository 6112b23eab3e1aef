"""A deterministic multi-tenant chat workload: every run with the same seed sends the same
requests at the same offsets, whatever the front end.

Each tenant has its own long system prompt (a support-desk brief of about 1,000 tokens, built
from seeded choices of realistic sentences), and a few multi-turn conversations. A later turn
carries the earlier turns (user messages and scripted assistant replies, so that the text does
not depend on what the model answered), as a chat client sends it. Arrivals are a Poisson
process; each arrival is the next turn of a randomly chosen tenant's conversation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COMPANIES = ["Northwind Outfitters", "Bluefin Logistics", "Crescent Health Partners", "Ironbark Software",
             "Maple & Rye Bakeries", "Helios Solar Installations", "Quayside Property Management",
             "Aurora Travel Collective", "Summit Credit Union", "Lumen Learning Labs", "Redwood Veterinary Group",
             "Harbor Light Insurance", "Cobalt Cloud Hosting", "Greenleaf Grocers"]
INDUSTRIES = ["outdoor retail", "freight and logistics", "outpatient healthcare", "developer tools",
              "artisan baking", "residential solar", "property management", "group travel", "consumer banking",
              "online education", "veterinary care", "home and auto insurance", "managed hosting", "grocery delivery"]
CITIES = ["Portland", "Rotterdam", "Denver", "Leeds", "Montreal", "Adelaide", "Lyon", "Austin", "Wellington",
          "Gothenburg", "Halifax", "Porto", "Osaka", "Cape Town"]
PRODUCTS = ["the standard plan", "the premium plan", "the annual membership", "the starter kit", "the family bundle",
            "the business tier", "the gift card", "the loyalty programme", "the mobile app", "the self-service portal",
            "the express option", "the extended warranty"]
TOPICS = ["billing", "refunds", "account security", "shipping times", "cancellations", "appointments",
          "data privacy", "accessibility", "complaints", "upgrades", "outages", "identity checks"]
TONES = ["warm but concise", "calm and precise", "friendly and plain-spoken", "formal and courteous"]

SENTENCES = [
    "When a customer asks about {topic}, first confirm which account they are using and never guess from partial details.",
    "Customers on {product} may change their settings at any time from the account page, and changes apply from the next billing cycle.",
    "If a question about {topic} cannot be answered from this brief, say so plainly and offer to open a ticket with the {team} team.",
    "Do not promise delivery dates for {product}; quote the current estimate and explain that it may move during busy periods.",
    "Refunds for {product} are issued to the original payment method within {days} business days of approval.",
    "Our offices in {city} are open from {hour} in the morning until six in the evening, Monday to Friday, except public holidays.",
    "Always write in a {tone} voice, use short paragraphs, and avoid jargon unless the customer used it first.",
    "Never ask for a full card number, a password or a one-time code; the {team} team will never need them.",
    "If the customer mentions {topic} together with a safety concern, stop and give them the emergency line before anything else.",
    "For {topic}, the policy changed on the first of {month}; older confirmations may describe the previous rules.",
    "Escalate to a human agent when the customer asks twice for one, when they are clearly upset, or when money over {amount} euros is involved.",
    "Summarise what you have understood before proposing a solution, and end by asking whether that answers the question.",
    "Customers who joined through a partner may see {product} under a different name; treat both names as the same product.",
    "The {team} team publishes a status page; link to it for anything that looks like a wider outage rather than a single account problem.",
    "Do not discuss competitors' prices; describe what {product} includes and let the customer compare.",
    "Discounts for {product} cannot be combined, and a code that has expired cannot be reissued by an assistant.",
    "If the customer writes in another language, answer in that language when you can and keep the same level of formality.",
    "Record the ticket reference in your answer whenever you open one, so that the customer can quote it later.",
    "Accessibility requests about {topic} are handled first; offer a phone call, large print or a screen-reader friendly summary.",
    "Explain any fee before the customer agrees to it, including the {amount} euro charge for paper statements.",
]
TEAMS = ["billing", "support", "operations", "compliance", "customer care", "accounts", "technical"]
MONTHS = ["March", "April", "June", "September", "October", "November"]

QUESTIONS = [
    "Hi, I was charged twice for {product} this month. Can you help me understand why?",
    "How long does a refund usually take if I cancel {product} today?",
    "I can't log in to the self-service portal since yesterday. What should I try?",
    "Can I move my appointment to next week without paying a fee?",
    "What exactly is included in {product} compared with the basic option?",
    "My order still says processing after five days. Is something wrong?",
    "Do you store my data outside the country, and can I ask you to delete it?",
    "I'd like to upgrade to {product}. Will I lose my current discount?",
    "Is there an outage right now? Nothing is loading for me.",
    "Can someone call me instead? I find it easier to explain on the phone.",
    "The code from your newsletter doesn't work at checkout. Could you check it?",
    "What documents do you need to verify my identity?",
]
FOLLOW_UPS = [
    "Thanks. And if that doesn't work, what's the next step?",
    "Okay, could you open a ticket for me then?",
    "That makes sense. Is there any fee involved?",
    "Could you summarise that in two sentences so I can forward it to my partner?",
    "One more thing: does this also apply to {product}?",
    "Great, and how will I know when it's done?",
    "Sorry, I didn't quite follow. Can you say that more simply?",
]
REPLIES = [
    "Thanks for getting in touch. I understand you're asking about {topic}. I've checked the account you're writing from, "
    "and here is what I can see: the change you describe is expected under the current policy, and it should settle within "
    "{days} business days. If it doesn't, I can open a ticket with the {team} team so that someone reviews it by hand.",
    "I'm sorry about the trouble. For {topic}, the quickest fix is usually to sign out everywhere, clear the saved session "
    "and sign in again from the self-service portal. If you still see the same message after that, tell me what it says word "
    "for word and I'll pass it to the {team} team with your account reference.",
    "Good question. {product} includes priority handling and the extended support hours, and the price is fixed for twelve "
    "months. Your existing discount carries over as long as you upgrade before it expires; after that the standard rate "
    "applies. Would you like me to check the date on your discount?",
]


@dataclass(frozen=True)
class Request:
    index: int
    at: float  # seconds from the start of the run
    tenant: int
    conversation: int
    turn: int
    priority: int
    max_tokens: int
    messages: tuple[dict, ...]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fill(template: str, rng: random.Random, company: int) -> str:
    return template.format(
        topic=rng.choice(TOPICS), product=rng.choice(PRODUCTS), team=rng.choice(TEAMS), days=rng.choice([3, 5, 7, 10]),
        city=CITIES[company % len(CITIES)], hour=rng.choice(["eight", "nine", "half past eight"]),
        tone=rng.choice(TONES), month=rng.choice(MONTHS), amount=rng.choice([50, 100, 250, 500]),
    )


def system_prompt(tenant: int, seed: int, target_chars: int) -> str:
    """About `target_chars` characters (~4.4 per token) of a tenant's support-desk brief."""
    rng = random.Random(seed * 1000 + tenant)
    company = tenant % len(COMPANIES)
    parts = [
        f"You are the customer assistant of {COMPANIES[company]} (tenant {tenant:02d}), {_article(INDUSTRIES[company])} {INDUSTRIES[company]} company "
        f"based in {CITIES[company]}. Read this brief carefully; it is the only source of policy you may rely on."
    ]
    section = 0
    while sum(len(p) for p in parts) < target_chars:
        section += 1
        heading = rng.choice(TOPICS).capitalize()
        body = " ".join(_fill(rng.choice(SENTENCES), rng, company) for _ in range(rng.randint(3, 5)))
        parts.append(f"Section {section}: {heading}. {body}")
    return "\n\n".join(parts)


def build(seed: int = 7, tenants: int = 12, conversations: int = 2, turns: int = 4, rate: float = 1.2,
          prompt_chars: int = 4600, priorities: tuple[float, ...] = (0.15, 0.15, 0.4, 0.15, 0.15),
          max_tokens: tuple[int, ...] = (16, 24, 32), limit: int | None = None) -> list[Request]:
    """tenants × conversations × turns requests (96 by default), Poisson at `rate` per second."""
    rng = random.Random(seed)
    systems = [system_prompt(t, seed, prompt_chars) for t in range(tenants)]
    # Each tenant's requests in the order a client would send them: its conversations interleaved.
    pending: list[list[tuple[int, int]]] = [
        [(c, k) for k in range(turns) for c in range(conversations)] for _ in range(tenants)
    ]
    # The scripted content of every conversation, fixed up front.
    script: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for t in range(tenants):
        crng = random.Random(seed * 7919 + t)
        for c in range(conversations):
            turns_text = []
            for k in range(turns):
                q = _fill(crng.choice(QUESTIONS if k == 0 else FOLLOW_UPS), crng, t)
                a = _fill(crng.choice(REPLIES), crng, t)
                turns_text.append((q, a))
            script[(t, c)] = turns_text
    total = tenants * conversations * turns
    requests = []
    now = 0.0
    for i in range(total if limit is None else min(limit, total)):
        now += rng.expovariate(rate)
        weights = [len(p) for p in pending]
        t = rng.choices(range(tenants), weights=weights)[0]
        c, k = pending[t].pop(0)
        messages: list[dict] = [{"role": "system", "content": systems[t]}]
        for q, a in script[(t, c)][:k]:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": script[(t, c)][k][0]})
        priority = rng.choices(range(5), weights=priorities)[0]
        requests.append(Request(i, round(now, 4), t, c, k, priority, rng.choice(max_tokens), tuple(messages)))
    return requests
